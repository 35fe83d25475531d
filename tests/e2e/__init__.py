"""End-to-end tests: real processes, real clients."""

from __future__ import annotations
