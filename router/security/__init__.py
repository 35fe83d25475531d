"""Who may do what: the router's authorization policy, decided from verified identities."""

from __future__ import annotations
