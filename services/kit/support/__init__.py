"""Plumbing with no mesh knowledge: typed settings, the event loop choice, SQLite, retries and
backoff, HTTP clients."""

from __future__ import annotations
