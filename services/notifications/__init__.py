"""The notifications module (`python -m services.notifications`)."""

from __future__ import annotations
