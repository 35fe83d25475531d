"""Download bookkeeping every downloader shares: records, counters, events, their store."""

from __future__ import annotations
