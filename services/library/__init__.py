"""The library module (`python -m services.library`)."""

from __future__ import annotations
