"""The newest stored events, in memory, for subscribers that are caught up with the log.

Shared by every consumer and bounded; a consumer further behind reads pages from the store.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.bus.store import AppendResult
    from soulspot.events.v1 import envelope_pb2


class TailCache:
    """Every unparked event with sequence > `floor` is held here, at most `size` of them."""

    def __init__(self, size: int, last_sequence: int) -> None:
        self._size = max(1, size)
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
        while len(self) > self._size:
            self.floor = self._seqs[self._start]
            self._start += 1
        if self._start > self._size:
            del self._seqs[: self._start]
            del self._events[: self._start]
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
