"""The newest stored events, in memory, for subscribers that are caught up with the log.

Shared by every consumer and bounded in count and in bytes (large events would otherwise
make a count bound a memory bound of count times the largest event); a consumer further
behind reads pages from the store.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from soulspot.events.v1 import envelope_pb2

if TYPE_CHECKING:
    from router.bus.store import AppendResult


# Stands in for an event evicted from the cache until the lists are compacted.
_GONE = envelope_pb2.EventEnvelope()


class TailCache:
    """Every unparked event with sequence > `floor` is held here, at most `size` of them
    and at most `max_bytes` of them (serialized), the newest always."""

    def __init__(self, size: int, last_sequence: int, max_bytes: int = 0) -> None:
        self._size = max(1, size)
        self._max_bytes = max_bytes  # 0: no byte bound
        self._sizes: list[int] = []
        self.bytes = 0
        # Lists with a start offset (compacted now and then): O(1) indexing for bisect.
        self._seqs: list[int] = []
        self._events: list[envelope_pb2.EventEnvelope] = []
        self._start = 0
        self.floor = last_sequence
        self.last_sequence = last_sequence

    def __len__(self) -> int:
        return len(self._seqs) - self._start

    def add(self, results: list[AppendResult]) -> None:
        for result in results:
            self.last_sequence = max(self.last_sequence, result.sequence)
            if result.parked:
                continue
            self._seqs.append(result.sequence)
            self._events.append(result.envelope)
            if self._max_bytes:
                size = result.envelope.ByteSize()
                self._sizes.append(size)
                self.bytes += size
        while len(self) > self._size or (
            self._max_bytes and self.bytes > self._max_bytes and len(self) > 1
        ):
            self.floor = self._seqs[self._start]
            if self._max_bytes:
                self.bytes -= self._sizes[self._start]
                # Dropped from memory now, not at the next compaction.
                self._events[self._start] = _GONE
            self._start += 1
        if self._start > min(self._size, len(self._seqs) // 2 + 64):
            del self._seqs[: self._start]
            del self._events[: self._start]
            if self._max_bytes:
                del self._sizes[: self._start]
            self._start = 0

    def read_after(
        self, after: int, limit: int
    ) -> tuple[list[envelope_pb2.EventEnvelope], int] | None:
        """Up to `limit` events after `after` and how far that read got, or None when the
        cache does not reach back to `after`."""
        if after < self.floor:
            return None
        index = bisect.bisect_right(self._seqs, after, lo=self._start)
        end = min(len(self._seqs), index + max(0, limit))
        events = self._events[index:end]
        if end < len(self._seqs):
            scanned = self._seqs[end - 1] if end > index else after
        else:
            scanned = self.last_sequence
        return events, max(after, scanned)
