"""A durable consumer: its position in the log, its deliveries and its subscribers.

This is the SQLite bus's consumer, and the dispatcher every bus shares: a JetStream bus
feeds it from a JetStream pull consumer instead (router/bus/jetstream/durable_consumer.py
overrides what it reads, `_wants_fetch`/`_fetch`, and how it settles, `_done`/`_fail`/
`flush`, and keeps the rest).

Subscribers sharing the consumer's name compete for its events. The consumer reads the log
in bounded pages (from the shared tail cache when it is caught up, else from the store), and
replayed dead letters the same way (they stay queued in the store), so its memory is bounded
by the page size plus the deliveries in flight, whatever its subscribers do or however many
dead letters are replayed. Each subscriber has its own in-flight limits, in deliveries and in
bytes (one delivery always fits): a stuck subscriber only stops receiving, it never holds up
another consumer, and what it holds unacked stays bounded whatever it asked for.

Ordering keys: of the events sharing a non-empty ordering_key, at most one is in flight per
consumer (over all its subscribers), and they go in sequence order. The first one the
dispatcher takes owns the key until it is done (acked, or parked as a dead letter); a nack
or an ack timeout keeps the key, so the redelivery comes before the next event of the key.
Later events of the key are held back in memory and go to the dispatcher one at a time as
the key is released; other keys and unkeyed events pass them. Held events count as
read-ahead, so memory stays bounded by the page: a key with half a page held behind it
pauses reading ahead until it moves (its owner is acked or, after its last attempt, parked).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from router.bus.patterns import PatternSet
from services.kit.support.tasks import cancel_within
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable

    from router.bus.metrics import BusMetrics
    from router.bus.store import ConsumerRecord, EventStore
    from router.bus.tail import TailCache
    from soulspot.events.v1 import envelope_pb2

_log = logging.getLogger(__name__)
# How long a closing consumer waits for its dispatcher to end.
DISPATCHER_STOP_S = 5.0
_tiebreak = itertools.count()
FLUSH_DELAY_S = 0.01


# (delivery_id, attempt, event) to send, or None: end the stream.
Outgoing = tuple[int, int, "envelope_pb2.EventEnvelope"] | None


@dataclass(eq=False, slots=True)
class Subscription:
    """One Subscribe stream of a consumer."""

    instance: str
    max_in_flight: int
    # How long a delivery to this stream may stay unacked (its SubscribeStart's ack_timeout).
    ack_timeout_s: float
    # What the stream has to send; at most max_in_flight deliveries (plus an end marker).
    outgoing: deque[Outgoing] = field(default_factory=deque)
    signal: asyncio.Event = field(default_factory=asyncio.Event)
    # Unacked deliveries by delivery id, in deadline order: every deadline is "now plus this
    # stream's ack timeout", so insertion order is deadline order (an extended deadline
    # moves its entry to the end). The oldest entries expire first; no heap needed.
    in_flight: dict[int, Outstanding] = field(default_factory=dict)
    closed: bool = False
    # Serialized bytes of the unacked deliveries, and how many the stream may hold (0: no
    # bound). Past the bound the stream gets nothing more until acks come back.
    max_in_flight_bytes: int = 0
    in_flight_bytes: int = 0

    @property
    def capacity(self) -> int:
        if self.closed or self.bytes_full:
            return 0
        return self.max_in_flight - len(self.in_flight)

    @property
    def bytes_full(self) -> bool:
        return 0 < self.max_in_flight_bytes <= self.in_flight_bytes

    def take(self, delivery_id: int) -> Outstanding | None:
        """Remove a delivery from the stream's in-flight set (acked, nacked or expired)."""
        o = self.in_flight.pop(delivery_id, None)
        if o is not None:
            self.in_flight_bytes -= o.size
        return o

    def push(self, item: Outgoing) -> None:
        self.outgoing.append(item)
        self.signal.set()

    def end(self) -> None:
        self.push(None)


@dataclass(eq=False, slots=True)
class Outstanding:
    """An event read for a consumer and not yet done."""

    seq: int
    envelope: envelope_pb2.EventEnvelope
    attempts: int = 0
    last_error: str = ""
    replay: bool = False
    delivery_id: int = 0
    sub: Subscription | None = None
    deadline: float = 0.0
    failure_recorded: bool = False  # a consumer_pending row exists for it
    key: str = ""  # the envelope's ordering_key, read once
    size: int = 0  # the envelope's serialized size, measured at its first delivery


@dataclass(slots=True)
class ConsumerStats:
    delivered: int = 0
    redelivered: int = 0
    acked: int = 0
    dead_lettered: int = 0
    # The most replayed dead letters held in memory at once (at most one page).
    replays_buffered_max: int = 0


class Consumer:
    """The state and dispatcher of one durable consumer."""

    def __init__(
        self,
        record: ConsumerRecord,
        *,
        store: EventStore,
        cache: TailCache,
        delivery_ids: itertools.count[int],
        page_size: int,
        max_attempts: int,
        metrics: BusMetrics | None = None,
    ) -> None:
        self.name = record.name
        self._metrics = metrics
        self.patterns = PatternSet(record.patterns)
        self.floor = record.floor
        self.max_attempts = max_attempts
        # Seconds without a subscriber before the bus removes this consumer (0: never), and
        # since when it has had none (wall clock; 0 while one is attached).
        self.inactive_s = 0.0
        self.idle_since = 0.0
        self.stats = ConsumerStats()
        self._store = store
        self._cache = cache
        self._ids = delivery_ids
        self._page_size = max(1, page_size)
        self._cursor = record.floor
        # Left from a previous run: events done above the floor, and earlier failures.
        self._done_before = {s for s in record.done_above_floor if s > record.floor}
        self._pending_before = {s: p for s, p in record.pending.items() if not p.replay}
        self._outstanding: dict[int, Outstanding] = {}
        # Replayed dead letters read from the store (at most a page) and not yet done. The
        # store may hold more past `_replay_cursor` (`_replays_unread`); a new replay request
        # may queue some below it (`_replay_rescan`: read again from the start).
        self._replays: dict[int, Outstanding] = {}
        self._replay_cursor = 0
        self._replays_unread = record.replays > 0
        self._replay_rescan = False
        # Replays finished while a page read is under way: that read may still return them.
        self._replays_finished_meanwhile: set[int] | None = None
        # Outstanding (non-replay) sequences in log order (read in sequence order), oldest
        # first; entries already done are dropped when they reach the front.
        self._order: deque[int] = deque()
        self._ready: list[tuple[int, int, Outstanding]] = []
        self._waiting: list[tuple[float, int, Outstanding]] = []
        # Ordering keys: the event that owns each busy key (in flight, waiting for a
        # redelivery or ready for one) and the later events of the key held back behind it,
        # in the order the dispatcher took them (sequence order). Only busy keys have
        # entries; unkeyed events never touch these.
        self._key_owner: dict[str, Outstanding] = {}
        self._held: dict[str, deque[Outstanding]] = {}
        self._held_count = 0
        self._subs: list[Subscription] = []
        self._rr = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # One loop timer for the earliest ack deadline or nack delay (not one per wait).
        self._timer: asyncio.TimerHandle | None = None
        # Progress not yet handed to the store: acks are persisted in small groups (one
        # write per flush, not per ack). An ack lost in a crash means one redelivery.
        self._done_dirty: list[int] = []
        self._cleared_dirty: list[int] = []
        self._replays_dirty: list[int] = []
        self._floor_dirty = False
        self._flush_handle: asyncio.TimerHandle | None = None

    # -- subscribers -----------------------------------------------------------------------

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs)

    @property
    def attached(self) -> bool:
        """Whether any stream is subscribed (asked on every commit: no list copy)."""
        return bool(self._subs)

    def attach(self, sub: Subscription, patterns: tuple[str, ...]) -> None:
        if patterns and patterns != self.patterns.patterns:
            self.patterns = PatternSet(patterns)
        self._subs.append(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"consumer:{self.name}")
        self.notify()

    async def configure(self, patterns: tuple[str, ...], max_attempts: int) -> None:
        """A subscriber asked these patterns and attempts: where the log keeps delivery state
        of its own (JetStream), it follows; here the dispatcher reads them as it goes."""
        return

    def detach(self, sub: Subscription) -> None:
        """The stream ended: its unacked deliveries count as failed attempts."""
        sub.closed = True
        if sub in self._subs:
            self._subs.remove(sub)
        for o in list(sub.in_flight.values()):
            self._fail(o, "subscriber went away before acking", 0.0)
        sub.in_flight.clear()
        sub.in_flight_bytes = 0
        self.notify()

    async def close(self) -> None:
        """Router shutdown: stop dispatching; the persisted state stays as it is."""
        self.flush()
        for sub in self._subs:
            sub.closed = True
            sub.end()
        # Asked again if it lost the cancellation in a read of the log (see cancel_within);
        # the bus bounds the whole close as well.
        if not await cancel_within(self._task, DISPATCHER_STOP_S):
            _log.warning(
                "consumer %s dispatcher did not stop within %gs", self.name, DISPATCHER_STOP_S
            )

    def discard(self) -> None:
        """The consumer is being removed (idle too long): stop without writing anything."""
        for handle in (self._flush_handle, self._timer):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._timer = None
        if self._task is not None:
            self._task.cancel()

    def notify(self) -> None:
        self._wake.set()

    # -- acks ------------------------------------------------------------------------------

    def ack(self, sub: Subscription, delivery_id: int) -> None:
        self.ack_many(sub, (delivery_id,))

    def ack_many(self, sub: Subscription, delivery_ids: Iterable[int]) -> None:
        """Acks of one stream (an AckBatch): the floor, the flush and the dispatcher's
        wake-up are settled once for all of them."""
        in_flight = sub.in_flight
        acked = 0
        for delivery_id in delivery_ids:
            o = sub.take(delivery_id)
            if o is None or o.delivery_id != delivery_id:
                continue  # late ack of a delivery that was already redelivered or done
            o.sub = None
            acked += 1
            self._done(o)
        if not acked:
            return
        self.stats.acked += acked
        self._advance_floor()
        self._schedule_flush()
        # Wake the dispatcher once a quarter of the window is free, not for every ack:
        # deliveries then go out in runs.
        if sub.capacity >= max(1, sub.max_in_flight // 4) or not in_flight:
            self.notify()

    def nack(self, sub: Subscription, delivery_id: int, delay_s: float, reason: str) -> None:
        o = sub.take(delivery_id)
        if o is None or o.delivery_id != delivery_id:
            return
        self._fail(o, reason or "nacked", max(0.0, delay_s))

    def in_progress(self, sub: Subscription, delivery_id: int) -> None:
        o = sub.in_flight.get(delivery_id)
        if o is None or o.delivery_id != delivery_id:
            return
        o.deadline = time.monotonic() + sub.ack_timeout_s
        # The latest deadline: to the end of the deadline order.
        del sub.in_flight[delivery_id]
        sub.in_flight[delivery_id] = o

    def replays_queued(self) -> None:
        """Dead letters were queued as replays for this consumer (in the store): read them."""
        self._replay_rescan = True
        self.notify()

    # -- state changes ---------------------------------------------------------------------

    def _finish(self, o: Outstanding) -> None:
        self._done(o)
        if not o.replay:
            self._advance_floor()
        self._schedule_flush()

    def _done(self, o: Outstanding) -> None:
        """`o` is acked or parked; the caller advances the floor and schedules the flush."""
        if o.key:
            self._release_key(o)
        if o.replay:
            self._replays.pop(o.seq, None)
            self._replays_dirty.append(o.seq)
            if self._replays_finished_meanwhile is not None:
                self._replays_finished_meanwhile.add(o.seq)
        else:
            self._outstanding.pop(o.seq, None)
            self._done_dirty.append(o.seq)
            if o.failure_recorded:
                self._cleared_dirty.append(o.seq)

    def _release_key(self, o: Outstanding) -> None:
        """`o` is done (acked or parked): the next held event of its key goes to the
        dispatcher; a dead letter releases its key like an ack, or the key would stall."""
        key = o.key
        if self._key_owner.get(key) is not o:
            return  # cannot happen: only a delivered event is done, and it owns its key
        held = self._held.get(key)
        if not held:
            del self._key_owner[key]
            return
        nxt = held.popleft()
        self._held_count -= 1
        if not held:
            del self._held[key]
        # It owns the key now, so it is dispatched even if another event of the key (a
        # replay taken later) reaches the ready heap first.
        self._key_owner[key] = nxt
        heapq.heappush(self._ready, (nxt.seq, next(_tiebreak), nxt))
        self.notify()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY_S, self.flush)

    def flush(self) -> None:
        """Hand the progress since the last flush to the store (one queued write)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not (
            self._done_dirty or self._cleared_dirty or self._replays_dirty or self._floor_dirty
        ):
            return
        floor = self.floor
        self._store.record_progress(
            self.name,
            floor,
            done=[s for s in self._done_dirty if s > floor],
            cleared=self._cleared_dirty,
            replays_done=self._replays_dirty,
        )
        self._done_dirty = []
        self._cleared_dirty = []
        self._replays_dirty = []
        self._floor_dirty = False

    def _advance_floor(self) -> bool:
        order, outstanding = self._order, self._outstanding
        while order and order[0] not in outstanding:
            order.popleft()
        new_floor = self._order[0] - 1 if self._order else self._cursor
        if new_floor <= self.floor:
            return False
        self.floor = new_floor
        self._floor_dirty = True
        if self._done_before:
            self._done_before = {s for s in self._done_before if s > new_floor}
        return True

    def _count_parked(self, o: Outstanding, reason: str) -> None:
        """`o` is parked after its last attempt: the stats, the log line and the metric (the
        store write is the caller's: each store parks its own way)."""
        self.stats.dead_lettered += 1
        _log.warning(
            "event %s parked for consumer %s after %d attempts: %s",
            o.envelope.event_id,
            self.name,
            o.attempts,
            reason,
            extra={
                "consumer": self.name,
                "event_id": o.envelope.event_id,
                "event_type": o.envelope.event_type,
                "sequence": o.seq,
                "attempts": o.attempts,
            },
        )
        if self._metrics is not None:
            self._metrics.dead_lettered(o.envelope.event_type, self.name, "max_attempts")

    def _fail(self, o: Outstanding, reason: str, delay_s: float) -> None:
        o.sub = None
        o.last_error = reason
        if o.attempts >= self.max_attempts:
            self._count_parked(o, reason)
            # Queued before the done record, so both land in the same or consecutive commits.
            self._store.park(
                self.name,
                o.seq,
                router_pb2.DEAD_LETTER_REASON_MAX_ATTEMPTS,
                o.attempts,
                reason,
            )
            self._finish(o)
            self.flush()
        else:
            o.failure_recorded = True
            self._store.record_failure(self.name, o.seq, o.attempts, reason, o.replay)
            if delay_s > 0:
                heapq.heappush(self._waiting, (time.monotonic() + delay_s, next(_tiebreak), o))
            else:
                heapq.heappush(self._ready, (o.seq, next(_tiebreak), o))
        self.notify()

    # -- the dispatcher --------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self._subs:
                self._wake.clear()
                now = time.monotonic()
                self._expire(now)
                self._release(now)
                if self._wants_fetch():
                    await self._fetch()
                if self._wants_replays():
                    await self._fetch_replays()
                self._dispatch()
                if self._wake.is_set() or self._wants_fetch() or self._wants_replays():
                    continue
                self._arm_timer(now)
                await self._wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("consumer %s dispatcher failed", self.name)
            for sub in self._subs:
                sub.end()
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _arm_timer(self, now: float) -> None:
        """Wake the dispatcher at the next deadline; an armed timer that is due no later
        stays (most waits end with an ack or a new event, long before any deadline)."""
        due = self._next_timer(now)
        timer = self._timer
        if due is None:
            return
        when = asyncio.get_running_loop().time() + due
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._wake.set()

    def _wants_fetch(self) -> bool:
        # Read ahead at most one page: the consumer's memory stays bounded whatever its
        # subscribers do. Events held back behind their ordering key are read ahead too.
        return (
            len(self._ready) + self._held_count <= self._page_size // 2
            and self._cursor < self._cache.last_sequence
        )

    def _wants_replays(self) -> bool:
        # Like the log: at most one page of replays in memory, the next read once half of
        # it is done.
        return (self._replays_unread or self._replay_rescan) and len(
            self._replays
        ) <= self._page_size // 2

    def _next_timer(self, now: float) -> float | None:
        times = []
        for sub in self._subs:
            for o in sub.in_flight.values():  # the oldest delivery expires first
                times.append(o.deadline)
                break
        if self._waiting:
            times.append(self._waiting[0][0])
        if not times:
            return None
        return max(0.0, min(times) - now) + 0.001

    def _expire(self, now: float) -> None:
        for sub in self._subs:
            in_flight = sub.in_flight
            expired = []
            for delivery_id, o in in_flight.items():  # oldest deadline first
                if o.deadline > now:
                    break
                expired.append(delivery_id)
            for delivery_id in expired:
                late = sub.take(delivery_id)
                if late is not None:
                    self._fail(late, f"not acked within {sub.ack_timeout_s:g}s", 0.0)

    def _release(self, now: float) -> None:
        while self._waiting and self._waiting[0][0] <= now:
            _, tb, o = heapq.heappop(self._waiting)
            heapq.heappush(self._ready, (o.seq, tb, o))

    async def _fetch(self) -> None:
        limit = self._page_size - len(self._ready) - self._held_count
        if limit <= 0:
            return
        after = self._cursor
        cached = self._cache.read_after(after, limit)
        if cached is not None:
            events, scanned = cached
        else:
            page = await self._store.read_after(after, limit)
            events, scanned = page.events, page.scanned_to
        if self._cursor != after:  # another fetch ran meanwhile (cannot happen: one task)
            return
        # Locals: this loop runs for every event and every consumer (10 times an event
        # with ten subscribers).
        matches = self.patterns.matches
        done_before, pending_before = self._done_before, self._pending_before
        outstanding, order, ready = self._outstanding, self._order, self._ready
        push = heapq.heappush
        for env in events:
            seq = env.sequence
            if seq <= after or not matches(env.event_type):
                continue
            if done_before and seq in done_before:
                done_before.discard(seq)
                continue
            o = Outstanding(seq, env, key=env.ordering_key)
            if pending_before:
                earlier = pending_before.pop(seq, None)
                if earlier is not None:
                    o.attempts = earlier.attempts
                    o.last_error = earlier.last_error
                    o.failure_recorded = True
            outstanding[seq] = o
            order.append(seq)
            push(ready, (seq, next(_tiebreak), o))
        self._cursor = max(self._cursor, scanned)
        if self._advance_floor():
            # Nothing outstanding below the cursor: the skipped (unmatched) events are done.
            self._schedule_flush()

    async def _fetch_replays(self) -> None:
        if self._replay_rescan:
            self._replay_rescan = False
            self._replay_cursor = 0
            self._replays_unread = True
        limit = self._page_size - len(self._replays)
        if limit <= 0:
            return
        # Finished replays go to the store first: the read is queued behind them.
        self.flush()
        finished: set[int] = set()
        self._replays_finished_meanwhile = finished
        try:
            page = await self._store.read_replays(self.name, self._replay_cursor, limit)
        finally:
            self._replays_finished_meanwhile = None
        if len(page) < limit:
            self._replays_unread = False
        for replay in page:
            seq = replay.sequence
            self._replay_cursor = max(self._replay_cursor, seq)
            if seq in self._replays or seq in finished:
                continue
            if replay.envelope is None:
                _log.warning(
                    "replayed event %d for consumer %s is gone from the log and its replay"
                    " carries no copy (queued by an older version); dropped",
                    seq,
                    self.name,
                    extra={"consumer": self.name, "sequence": seq},
                )
                self._replays_dirty.append(seq)
                self._schedule_flush()
                continue
            o = Outstanding(
                seq,
                replay.envelope,
                attempts=replay.attempts,
                last_error=replay.last_error,
                replay=True,
                failure_recorded=True,
                key=replay.envelope.ordering_key,
            )
            self._replays[seq] = o
            heapq.heappush(self._ready, (seq, next(_tiebreak), o))
        self.stats.replays_buffered_max = max(self.stats.replays_buffered_max, len(self._replays))

    def _dispatch(self) -> None:
        ready = self._ready
        if not ready:
            return
        # One clock reading, one metrics update and one wake-up per stream per round, not
        # per delivery: a round takes microseconds, and fan-out makes deliveries the bus's
        # most frequent work.
        now = time.monotonic()
        counts: dict[tuple[str, bool], int] = {}
        served: list[Subscription] = []
        try:
            while ready:
                sub = self._pick()
                if sub is None:
                    return
                # A lone subscriber takes all that fits at once; several take turns, an
                # event each.
                room = sub.capacity if len(self._subs) == 1 else 1
                deadline = now + sub.ack_timeout_s
                taken = 0
                # Pop until an event that may go now: one held behind its key is set aside
                # (it costs no capacity), so a busy key never stops other keys or unkeyed
                # events.
                while ready and taken < room:
                    _, _, o = heapq.heappop(ready)
                    if (o.replay and o.seq not in self._replays) or (
                        not o.replay and o.seq not in self._outstanding
                    ):
                        continue
                    if o.key and not self._claim_key(o):
                        continue
                    self._deliver(sub, o, deadline)
                    counted = (o.envelope.event_type, o.attempts > 1)
                    counts[counted] = counts.get(counted, 0) + 1
                    taken += 1
                    if sub.bytes_full:
                        break
                if taken:
                    served.append(sub)
        finally:
            for sub in served:
                sub.signal.set()
            if self._metrics is not None:
                for (event_type, again), n in counts.items():
                    self._metrics.delivered(event_type, self.name, 2 if again else 1, n)

    def _claim_key(self, o: Outstanding) -> bool:
        """Whether `o` may be delivered now; if not, hold it back behind its key's owner.

        The ready heap yields the log's events of a key in sequence order, so the first one
        taken owns the key and the rest queue behind it in order. The owner keeps the key
        through nacks and ack timeouts (it comes back through the ready heap as the owner).
        A replayed dead letter takes its turn like the others: behind the events of its key
        taken before it, so it is never in flight beside another event of its key.
        """
        owner = self._key_owner.get(o.key)
        if owner is None:
            self._key_owner[o.key] = o
            return True
        if owner is o:
            return True
        held = self._held.get(o.key)
        if held is None:
            held = self._held[o.key] = deque()
        held.append(o)
        self._held_count += 1
        return False

    def _pick(self) -> Subscription | None:
        count = len(self._subs)
        for i in range(count):
            sub = self._subs[(self._rr + i) % count]
            if sub.capacity > 0:
                self._rr = (self._rr + i + 1) % count
                return sub
        return None

    def _deliver(self, sub: Subscription, o: Outstanding, deadline: float) -> None:
        """Queue `o` on `sub`; the caller counts it in the metrics and wakes the stream."""
        o.attempts += 1
        delivery_id = next(self._ids)
        o.delivery_id = delivery_id
        o.sub = sub
        o.deadline = deadline
        if not o.size:
            o.size = o.envelope.ByteSize()
        sub.in_flight[delivery_id] = o
        sub.in_flight_bytes += o.size
        if o.attempts > 1:
            self.stats.redelivered += 1
        self.stats.delivered += 1
        sub.outgoing.append((delivery_id, o.attempts, o.envelope))

    # -- status ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return sum(len(s.in_flight) for s in self._subs)

    @property
    def held_back(self) -> int:
        """Events read ahead but held back behind an earlier event of their ordering key."""
        return self._held_count

    @property
    def replays_buffered(self) -> int:
        """Replayed dead letters held in memory (read from the store, not yet done)."""
        return len(self._replays)

    @property
    def buffered(self) -> int:
        """Events held in memory for this consumer (read ahead, in flight, waiting)."""
        return len(self._outstanding) + len(self._replays)

    def info(self) -> router_pb2.ConsumerInfo:
        """The consumer's status; also writes its lag to the consumer_lag gauge."""
        lag = max(0, self._cache.last_sequence - self.floor)
        if self._metrics is not None:
            self._metrics.lag(self.name, lag)
        return router_pb2.ConsumerInfo(
            name=self.name,
            event_types=list(self.patterns.patterns),
            acked_sequence=self.floor,
            lag=lag,
            subscribers=len(self._subs),
            in_flight=self.in_flight,
        )
