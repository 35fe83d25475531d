"""Events parsed once per router: one EventEnvelope per stream sequence, shared by consumers.

Every durable consumer is its own JetStream consumer, so with ten consumers on an event type
each of its events arrives ten times; parsing it once and handing every consumer the same
envelope (as the tail cache does on SQLite) takes nine parses out of ten. Envelopes are
never changed once parsed (the sequence is set before any consumer sees one).

Bounded in count and in bytes, oldest out first: consumers pulling close together share,
and one far behind parses again. An entry is used only when the message's bytes are the
ones it was parsed from, so a stream deleted and created again (its sequences reused) never
hands out another event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.bus.jetstream.records import envelope_from

if TYPE_CHECKING:
    from soulspot.events.v1 import envelope_pb2

MAX_COUNT = 2048
MAX_BYTES = 8 * 1024 * 1024


class SharedEnvelopes:
    """The newest parsed events by stream sequence (see the module's text)."""

    def __init__(self, max_count: int = MAX_COUNT, max_bytes: int = MAX_BYTES) -> None:
        self._max_count = max(1, max_count)
        self._max_bytes = max_bytes
        # sequence -> (the bytes parsed, the envelope); insertion order is age order.
        self._entries: dict[int, tuple[bytes, envelope_pb2.EventEnvelope]] = {}
        self.bytes = 0
        self.parsed = 0  # how many parses this cache did (the rest were shared)

    def __len__(self) -> int:
        return len(self._entries)

    def envelope(self, sequence: int, data: bytes) -> envelope_pb2.EventEnvelope:
        """The event stored at `sequence` with these bytes, parsed at most once while held."""
        entries = self._entries
        entry = entries.get(sequence)
        if entry is not None and entry[0] == data:
            return entry[1]
        env = envelope_from(data)
        env.sequence = sequence
        self.parsed += 1
        self.offer(sequence, data, env)
        return env

    def offer(self, sequence: int, data: bytes, envelope: envelope_pb2.EventEnvelope) -> None:
        """Hold `envelope`, stored at `sequence` as `data` with its sequence set, for the
        consumers to come (this router's own appends: they need no parse at all)."""
        entries = self._entries
        entry = entries.pop(sequence, None)
        if entry is not None:
            self.bytes -= len(entry[0])
        entries[sequence] = (data, envelope)
        self.bytes += len(data)
        while len(entries) > self._max_count or (self.bytes > self._max_bytes and len(entries) > 1):
            oldest = next(iter(entries))
            self.bytes -= len(entries.pop(oldest)[0])
