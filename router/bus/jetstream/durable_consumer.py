"""A durable bus consumer on JetStream: the bus's dispatcher fed by a JetStream pull consumer.

The dispatcher (router/bus/consumer.py: competing subscribers, per-stream in-flight bounds,
ack timers, ordering keys) is the SQLite bus's; what it reads and how it settles is
JetStream's (router/bus/jetstream/pull_consumer.py):
- Reading: the router pulls only what its subscribers have room for (their free in-flight
  slots less what is ready), at most `max_ack_pending` (the bus's page size) unacked in
  all, so memory stays bounded by JetStream. Each pulled message is one event; an event the
  cycle guard parked (PARKED_HEADER), or one the patterns do not match (a broad filter), is
  acked at once without a delivery.
- Attempts are JetStream's `num_delivered`. An ack is `+ACK`; a nack (or a subscriber's ack
  timeout, the router's own timer per stream, or a stream that ends) is `-NAK` with its
  delay, and JetStream delivers the event again; the last attempt's failure is parked (a
  dead letter with its own copy, then `+TERM`). `max_deliver` is the bus's max attempts plus
  one, so an event whose router died after its last attempt comes once more, to be parked
  on arrival without a delivery.
- Ordering keys: an event nacked while it owns its key keeps the key until JetStream brings
  it back; later events of the key stay held in memory meanwhile. Everything held in memory
  unacked (read ahead, held behind a key, in flight) is marked in progress (`+WPI`) every
  `touch_s`, so JetStream's `ack_wait` only runs out for a router that died: then another
  router, once it holds the consumer's lease, gets those events again.
- Position: JetStream's ack floor, read at load and on each lease renewal tick, and followed
  in memory from what this router pulls and acks (no record written per ack); lag is
  JetStream's count of matching events not yet delivered plus those unacked here.
- Each event is parsed once per router, not once per consumer: the consumers share its
  envelope (shared_envelopes.py), as they share the tail cache's on SQLite.
- Replayed dead letters are not JetStream messages: they stay queued in the replays bucket and
  go through the dispatcher as on SQLite.

What costs an attempt that was not one: an event pulled but not yet delivered to a subscriber
(held behind its key, say) when its router stops is given back with a nak, and JetStream
counts the next delivery as another.
"""

from __future__ import annotations

import asyncio
import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from router.bus.consumer import Consumer, Outstanding, _tiebreak
from router.bus.jetstream.pull_consumer import delivery_of
from router.bus.jetstream.shared_envelopes import SharedEnvelopes
from services.kit.support.tasks import cancel_and_wait
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    import itertools
    from collections.abc import Awaitable, Callable

    from nats.aio.msg import Msg

    from router.bus.jetstream.pull_consumer import PullConsumer
    from router.bus.metrics import BusMetrics
    from router.bus.store import ConsumerRecord, EventStore
    from router.bus.tail import TailCache

PARKED_HEADER = "Soulspot-Parked"


@dataclass(eq=False, slots=True)
class Pulled(Outstanding):
    """An event pulled from JetStream and not yet done."""

    msg: Any = None  # the message to settle; None while JetStream holds it for a redelivery
    redelivery_due: bool = False  # nacked: JetStream brings it back


class JetStreamConsumer(Consumer):
    """A durable consumer whose log events come from, and are settled with, JetStream."""

    def __init__(
        self,
        record: ConsumerRecord,
        *,
        pull: PullConsumer,
        park: Callable[[str, int, int, int, str, bytes], Awaitable[None]],
        ack_floor: int,
        delivered_to: int,
        touch_s: float,
        store: EventStore,
        cache: TailCache,
        delivery_ids: itertools.count[int],
        page_size: int,
        max_attempts: int,
        metrics: BusMetrics | None = None,
        envelopes: SharedEnvelopes | None = None,
    ) -> None:
        super().__init__(
            record,
            store=store,
            cache=cache,
            delivery_ids=delivery_ids,
            page_size=page_size,
            max_attempts=max_attempts,
            metrics=metrics,
        )
        # What JetStream holds is the truth: no done or failure records of the bus's own.
        self._done_before = set()
        self._pending_before = {}
        self._pull = pull
        self._park_event = park
        self._touch_s = touch_s
        self._arrived: list[Msg] = []
        # The router's parsed events, shared with its other consumers.
        self._envelopes = envelopes if envelopes is not None else SharedEnvelopes()
        self._acked_floor = ack_floor
        self._cursor = ack_floor
        # Below this, a previous holder may have left events unacked that JetStream has not
        # given back yet: the floor stays at the ack floor read at load until then.
        self._delivered_at_load = delivered_to
        self._not_delivered = 0  # matching events JetStream has not delivered yet
        self._unacked_elsewhere = delivered_to > ack_floor
        self._toucher: asyncio.Task[None] | None = None
        pull.on_info = self._on_info
        pull.wants_info = self._wants_info
        pull.start(self._pull_room, self._on_arrived)

    # -- position --------------------------------------------------------------------------

    @property
    def floor(self) -> int:
        outstanding = self._outstanding
        estimate = (min(outstanding) - 1) if outstanding else self._cursor
        if self._cursor < self._delivered_at_load or self._unacked_elsewhere:
            # JetStream holds unacked events this router has not seen (a previous holder's):
            # its ack floor, as last read, is the position.
            return min(estimate, self._acked_floor)
        return estimate

    @floor.setter
    def floor(self, value: int) -> None:
        # The base class sets it from the record; JetStream's ack floor decides here.
        return

    def _advance_floor(self) -> bool:
        return False

    def _wants_info(self) -> bool:
        """Whether only JetStream can tell the position: a previous holder's unacked events
        are below it (cleared by an info read while quiet here)."""
        return self._unacked_elsewhere or self._cursor < self._delivered_at_load

    def _on_info(self, info: Any) -> None:
        """JetStream's own numbers, read on a lease renewal tick while it has no pull out
        or wants them (an ack floor a previous holder left behind catches up here)."""
        self._not_delivered = int(info.num_pending or 0)
        if info.ack_floor is not None:
            self._acked_floor = max(self._acked_floor, int(info.ack_floor.stream_seq))
            self._cursor = max(self._cursor, self._acked_floor)
        if not self._outstanding and not self._arrived:
            # Quiet here: whatever JetStream counts unacked is another router's. While
            # events are in flight, acks on their way would be counted as such: the last
            # quiet reading stands.
            self._unacked_elsewhere = int(info.num_ack_pending or 0) > 0

    # -- subscribers -----------------------------------------------------------------------

    def attach(self, sub: Any, patterns: tuple[str, ...]) -> None:
        super().attach(sub, patterns)
        if self._toucher is None or self._toucher.done():
            self._toucher = asyncio.create_task(self._touch(), name=f"touch:{self.name}")

    async def configure(self, patterns: tuple[str, ...], max_attempts: int) -> None:
        wanted = patterns or self.patterns.patterns
        await self._pull.reconfigure(wanted, max_attempts, self._page_size)

    def notify(self) -> None:
        self._wake.set()
        self._pull.wake()

    def _pull_room(self) -> int:
        if not self._subs:
            return 0
        arrived = len(self._arrived)
        free = sum(s.capacity for s in self._subs) - len(self._ready) - arrived
        # A nacked event stays outstanding while it waits for JetStream to give it back, and
        # JetStream only redelivers to an open pull (serving redeliveries before its
        # max_ack_pending check): a page of them must not close the pull, or nothing comes.
        due = sum(1 for o in self._outstanding.values() if isinstance(o, Pulled) and o.msg is None)
        room = max(self._page_size - len(self._outstanding) - arrived, due - arrived)
        return min(free, room)

    def _on_arrived(self, msg: Msg) -> None:
        self._arrived.append(msg)
        self._wake.set()

    async def _touch(self) -> None:
        """Everything unacked in memory is in progress for JetStream, so its ack_wait only
        runs out for a router that died."""
        while True:
            await asyncio.sleep(self._touch_s)
            for o in list(self._outstanding.values()):
                if isinstance(o, Pulled) and o.msg is not None:
                    self._pull.in_progress(o.msg)

    # -- reading ---------------------------------------------------------------------------

    def _wants_fetch(self) -> bool:
        return bool(self._arrived)

    async def _fetch(self) -> None:
        arrived, self._arrived = self._arrived, []
        matches = self.patterns.matches
        outstanding, ready = self._outstanding, self._ready
        pull, envelopes = self._pull, self._envelopes
        for msg in arrived:
            seq, delivered, self._not_delivered = delivery_of(msg.reply)
            if seq > self._cursor:
                self._cursor = seq
            known = outstanding.get(seq)
            if isinstance(known, Pulled):
                # JetStream gives back one this router nacked (or held past ack_wait).
                known.msg = msg
                known.attempts = delivered - 1
                if known.redelivery_due and known.sub is None:
                    known.redelivery_due = False
                    heapq.heappush(ready, (seq, next(_tiebreak), known))
                continue
            headers = msg.headers
            if headers and PARKED_HEADER in headers:
                pull.ack(msg)  # the cycle guard's: stored, never delivered
                continue
            env = envelopes.envelope(seq, msg.data)
            if not matches(env.event_type):
                pull.ack(msg)
                continue
            o = Pulled(seq, env, key=env.ordering_key, msg=msg)
            o.attempts = delivered - 1
            if o.attempts >= self.max_attempts:
                # Its router died during its last attempt: parked, not delivered again.
                outstanding[seq] = o
                self._fail(o, "its router went away during the last attempt", 0.0)
                continue
            outstanding[seq] = o
            heapq.heappush(ready, (seq, next(_tiebreak), o))
        self._pull.wake()

    # -- settling --------------------------------------------------------------------------

    def _done(self, o: Outstanding) -> None:
        if o.replay or not isinstance(o, Pulled):
            super()._done(o)
            return
        if o.key:
            self._release_key(o)
        self._outstanding.pop(o.seq, None)
        if o.msg is not None:
            self._pull.ack(o.msg)
            o.msg = None

    def _fail(self, o: Outstanding, reason: str, delay_s: float) -> None:
        if o.replay or not isinstance(o, Pulled):
            super()._fail(o, reason, delay_s)
            return
        o.sub = None
        o.last_error = reason
        if o.attempts >= self.max_attempts:
            self._park(o, reason)
        elif o.msg is not None:
            self._pull.nak(o.msg, delay_s)
            o.msg = None
            o.redelivery_due = True
        self.notify()

    def _park(self, o: Pulled, reason: str) -> None:
        self._count_parked(o, reason)
        msg, o.msg = o.msg, None
        if o.key:
            self._release_key(o)
        self._outstanding.pop(o.seq, None)
        written = self._park_event(
            self.name,
            o.seq,
            router_pb2.DEAD_LETTER_REASON_MAX_ATTEMPTS,
            o.attempts,
            reason,
            o.envelope.SerializeToString(),
        )
        if msg is not None:
            self._pull.after(written, msg, b"+TERM")
        else:
            task = asyncio.ensure_future(written)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def flush(self) -> None:
        """Only replayed dead letters have records of the bus's own (in the replays bucket)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not (self._replays_dirty or self._cleared_dirty):
            return
        self._store.record_progress(
            self.name, 0, done=[], cleared=self._cleared_dirty, replays_done=self._replays_dirty
        )
        self._done_dirty = []
        self._cleared_dirty = []
        self._replays_dirty = []

    # -- stopping --------------------------------------------------------------------------

    def _give_back(self) -> None:
        """Nak what this router holds unacked, so the next holder gets it without waiting
        out ack_wait."""
        for msg in self._arrived:
            self._pull.nak(msg)
        self._arrived = []
        for o in self._outstanding.values():
            if isinstance(o, Pulled) and o.msg is not None:
                self._pull.nak(o.msg)
                o.msg = None

    async def _stop_background(self) -> None:
        toucher, self._toucher = self._toucher, None
        await cancel_and_wait(toucher)
        self._give_back()
        await self._pull.close()

    async def close(self) -> None:
        await super().close()
        await self._stop_background()

    def discard(self) -> None:
        super().discard()
        task = asyncio.ensure_future(self._stop_background())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- status ----------------------------------------------------------------------------

    def info(self) -> router_pb2.ConsumerInfo:
        lag = self._not_delivered + len(self._outstanding)
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
