"""The event store interface: what the bus needs from a log backend.

SQLite (`SqliteEventStore`) is the embedded default; a NATS JetStream backend implements the
same Protocol when one router is not enough. Every method is async and never blocks the
event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import asyncio
    import itertools
    from collections.abc import Callable, Collection, Sequence

    from router.bus.consumer import Consumer
    from router.bus.metrics import BusMetrics
    from router.bus.tail import TailCache
    from soulspot.events.v1 import envelope_pb2
    from soulspot.router.v1 import router_pb2


@dataclass(frozen=True, slots=True)
class Parking:
    """Why an event is parked at publish time instead of delivered (cycle guard)."""

    reason: int  # a router_pb2.DeadLetterReason
    detail: str


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The outcome of appending one event."""

    sequence: int
    duplicate: bool
    envelope: envelope_pb2.EventEnvelope  # as stored, with sequence and stored_at
    parked: bool = False  # stopped by the cycle guard: stored, never delivered


@dataclass(slots=True)
class PendingRecord:
    """A delivery of one event to one consumer that failed at least once, or a replay."""

    attempts: int
    last_error: str = ""
    replay: bool = False


@dataclass(slots=True)
class ConsumerRecord:
    """A durable consumer's state: every event up to `floor` is done (acked or parked).

    `pending` holds the failure records of log events; replayed dead letters stay in the
    store (they may be many) and are only counted here: the consumer reads them a page at a
    time with `EventStore.read_replays`.
    """

    name: str
    patterns: tuple[str, ...]
    floor: int
    done_above_floor: set[int] = field(default_factory=set)
    pending: dict[int, PendingRecord] = field(default_factory=dict)
    replays: int = 0
    inactive_s: float = 0.0
    # The identity URI that owns it; "" when it has none (written before owners, or by a
    # plaintext router).
    owner: str = ""


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    """A replayed dead letter queued for a consumer, as read for delivery."""

    sequence: int
    # From the log or, once retention removed it there, the copy the dead letter carried
    # into its replay; None only for a replay queued before replays carried one.
    envelope: envelope_pb2.EventEnvelope | None
    attempts: int
    last_error: str


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A parked event."""

    dead_letter_id: int
    consumer: str
    sequence: int
    envelope: envelope_pb2.EventEnvelope
    reason: int
    attempts: int
    last_error: str
    parked_at_us: int


@dataclass(frozen=True, slots=True)
class EventPage:
    """Events after a position, and how far the scan got (for cursors over filtered reads)."""

    events: list[envelope_pb2.EventEnvelope]
    scanned_to: int


class EventStore(Protocol):
    """An append-only log with a global sequence, consumer state and dead letters."""

    # Called on the event loop with each commit's new events, in log order.
    append_listener: Callable[[list[AppendResult]], None] | None

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(
        self,
        envelopes: Sequence[envelope_pb2.EventEnvelope],
        parking: Sequence[Parking | None],
    ) -> list[AppendResult]:
        """Store events durably, in order; an event_id already stored is not stored again.
        A parked event is stored and dead-lettered (consumer "") in the same commit."""
        ...

    def append_soon(
        self,
        envelopes: Sequence[envelope_pb2.EventEnvelope],
        parking: Sequence[Parking | None],
    ) -> asyncio.Future[list[AppendResult]]:
        """`append`, begun now and answered by the future it hands back: a caller with many
        appends on their way (a publish stream) needs no task per append."""
        ...

    async def last_sequence(self) -> int: ...

    async def first_sequence_at(self, time_us: int) -> int:
        """The first sequence stored at or after the time (last sequence + 1 when none)."""
        ...

    async def read_after(
        self, after: int, limit: int, *, include_parked: bool = False
    ) -> EventPage:
        """Up to `limit` events with sequence > after, in log order; parked events (stopped
        by the cycle guard) only when asked, for queries: they are never delivered."""
        ...

    async def read_sequences(
        self, sequences: Sequence[int]
    ) -> list[envelope_pb2.EventEnvelope]: ...

    async def list_events(
        self,
        *,
        limit: int,
        oldest_first: bool,
        before: int | None,
        after: int | None,
        correlation_id: str,
        type_globs: Sequence[str],
    ) -> list[envelope_pb2.EventEnvelope]:
        """Events by type glob (SQLite GLOB syntax; the caller refines), newest first unless
        oldest_first; `before`/`after` bound the sequence for paging."""
        ...

    async def load_consumer(self, name: str) -> ConsumerRecord | None: ...

    async def save_consumer(
        self,
        name: str,
        patterns: Sequence[str],
        floor: int,
        *,
        inactive_s: float = 0.0,
        owner: str = "",
    ) -> None:
        """Create the consumer, or update its patterns and `inactive_s` (seconds without a
        subscriber before it is removed; 0 keeps it); `owner` is stored only while it has
        none."""
        ...

    async def delete_consumer(self, name: str) -> bool:
        """Remove a consumer's position, done and pending records (not its dead letters);
        whether it existed."""
        ...

    def set_consumer_idle(self, name: str, since_us: int) -> None:
        """Queued and lazy: the consumer lost its last subscriber at `since_us` (0: it has
        one again)."""
        ...

    async def consumers_idle_from(self, since_us: int) -> None:
        """At start, nobody is subscribed: consumers that go away when idle count as idle
        from `since_us` unless they already were."""
        ...

    async def expire_consumers(
        self, now_us: int, *, keep: Collection[str], also: Collection[str] = ()
    ) -> tuple[list[str], int | None]:
        """Remove the consumers idle longer than their `inactive_s` at `now_us`, and those
        named in `also`, except `keep`: their position, done and pending records (not their
        dead letters). Returns the names removed and when the next idle consumer's time is up
        (microseconds, wall clock), among those not kept, if any is idle."""
        ...

    # The three writes below are queued, not awaited, and lazy: they join the next commit
    # (or get one of their own within a fraction of a second), in order with every other
    # write. An ack must not wait for a sync; one lost in a crash means a redelivery.

    def record_progress(
        self,
        consumer: str,
        floor: int,
        *,
        done: Sequence[int],
        cleared: Sequence[int],
        replays_done: Sequence[int],
    ) -> None:
        """A consumer's progress: its new floor, events done above it, failure records to
        drop (`cleared`), and replayed dead letters that were handled."""
        ...

    def record_failure(
        self, consumer: str, sequence: int, attempts: int, last_error: str, replay: bool
    ) -> None: ...

    def park(
        self, consumer: str, sequence: int, reason: int, attempts: int, last_error: str
    ) -> None:
        """Add a dead letter for a consumer."""
        ...

    async def list_dead_letters(self, consumer: str, limit: int) -> list[DeadLetterRecord]: ...

    async def get_dead_letter(self, dead_letter_id: int) -> DeadLetterRecord | None: ...

    async def take_dead_letters(self, ids: Sequence[int], consumer: str) -> dict[str, int]:
        """Remove dead letters (the given ids, else every one of `consumer`) and queue them as
        replays for their consumer; returns how many were queued, per consumer. Dead letters
        of the cycle guard (consumer "") are never taken."""
        ...

    async def read_replays(self, consumer: str, after: int, limit: int) -> list[ReplayRecord]:
        """Up to `limit` replays queued for the consumer with sequence > after, in sequence
        order. It runs after every write queued before it, so a replay whose completion the
        consumer already handed over (`record_progress`) is not read again."""
        ...

    async def count_dead_letters(self) -> int: ...

    async def apply_retention(self, max_age_s: float, max_bytes: int) -> int:
        """Delete the oldest events beyond the age or total size; returns how many."""
        ...


@runtime_checkable
class ConsumerHost(Protocol):
    """A store that keeps durable consumers' delivery state itself (JetStream: each is a
    JetStream consumer): the bus asks it for each consumer, its consumers read no tail
    cache, and any router can list every consumer of the log."""

    # Told the consumer for which a replay was queued, through any router.
    on_replays_queued: Callable[[str], None] | None

    async def open_consumer(
        self,
        record: ConsumerRecord,
        *,
        cache: TailCache,
        delivery_ids: itertools.count[int],
        page_size: int,
        max_attempts: int,
        metrics: BusMetrics | None = None,
    ) -> Consumer:
        """The consumer, served here: from record.floor + 1 when the store has no delivery
        state for it yet, else from where that state is."""
        ...

    async def consumer_statuses(self, skip: Collection[str] = ()) -> list[router_pb2.ConsumerInfo]:
        """Every durable consumer of the log but those in `skip`, as the store counts it."""
        ...
