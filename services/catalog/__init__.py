"""The catalog module: search.track over the local library's own index (SQLite FTS5)."""

from __future__ import annotations
