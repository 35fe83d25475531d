"""The NATS JetStream event store: the bus's log as a JetStream stream, for more than one box.

Mapping. The log is the stream `<name>` (default SOULSPOT_EVENTS), one subject per event
type (`<name>.<event_type>`), file storage, `<replicas>` copies; the bus's sequence is the
stream's sequence. `append` returns once JetStream acknowledged the publish (with R3 in a
cluster: once a quorum holds it). Reads go by direct get: a batch of messages per request
for catch-up pages and scans, one message by sequence, the first at a time by `start_time`.

What else lives where, and why:
- event ids: KV bucket `<name>_IDS`, event_id -> sequence, entries kept as long as the log
  keeps events (`max_age`). Every publish carries `Nats-Msg-Id` = event_id, which JetStream
  deduplicates within its duplicate window; the bucket finds a first copy older than that.
  An append asks the bucket and publishes back to back (one round trip); when the bucket
  knew the event, the new copy is deleted before this router hands it to anyone and the
  first copy is the answer. The new id is written create-if-absent after the ack, with the
  next append's messages or within REMEMBER_DELAY_S (50 ms). Appends go as group commits:
  those that arrive while a batch is on its way go together once it is answered, each
  answered on its own: ATOMIC_BATCH_MIN events or more as one atomic batch, fewer as
  separate publishes sent back to back.
- durable consumers: each is a JetStream durable pull consumer on the log stream, named by
  the bus name's token, its filter subjects the bus's patterns, `max_deliver` the bus's
  max attempts plus one, `max_ack_pending` the page size, `ack_wait` ACK_WAIT_LEASES
  consumer leases. JetStream holds its delivery state: position (ack floor), attempts
  (`num_delivered`), what is unacked and when it goes out again; the router pulls, settles
  each message (ack, nak with a delay, in progress, term) and keeps no record of its own
  per ack (router/bus/jetstream/pull_consumer.py, durable_consumer.py).
- what JetStream does not hold of a consumer (owner identity, inactive threshold and idle
  timer, the patterns as asked): KV bucket `<name>_CONSUMERS`, one key per consumer,
  written when a subscriber changes them (not per ack); only by the router holding the
  consumer's lease (bucket `<name>_CONSUMER_LEASES`). The bus's idle expiry stays the
  bus's, not JetStream's `inactive_threshold`: JetStream counts a pull consumer inactive
  from its last pull, while the bus counts from its last subscriber (a router serving a
  consumer without subscribers still pulls, or not, as it likes), and the expiry also
  removes the consumer's record and queued replays. Removing a consumer (expiry or
  DeleteConsumer) deletes its JetStream consumer; the router serving it notices at once
  when a pull of it is out (JetStream ends the pull: 409), else (its subscribers saturated)
  on its next lease renewal tick, a third of a lease, and ends its subscribers' streams.
- replayed dead letters queued for a consumer: KV bucket `<name>_REPLAYS`, one key per
  (consumer, sequence), which sorts by sequence, with the dead letter's own copy of the event.
  Every router watches the bucket, so a replay queued through one router reaches the
  router serving the consumer at once.
- dead letters: the stream `<name>_DLQ`, one subject per consumer. A stream, not a bucket:
  its sequence is the dead letter's id (monotonic, never reused, as the bus promises), a
  consumer's letters are a subject filter away, and taking one is deleting its message.

Where the promises differ from SQLite's, plainly:
- FULL/NORMAL are the server's, not the store's: FULL holds only when every server runs with
  `jetstream { sync_interval: always }`; with the server's default (sync every 2 minutes)
  an acked event survives a crash of nats-server but a power cut of a lone server may take
  the last ones. The store cannot read the server's configuration, so it cannot check.
- Nothing spans two writes atomically: a parked event and its dead letter, a taken dead
  letter and its replay, are two JetStream writes. A crash between them leaves the first:
  a parked event without its dead letter (still in the log, marked parked, never
  delivered), or a queued replay whose dead letter is still listed (replayable twice).
- The ids bucket is written after the ack (within 50 ms), without waiting for JetStream's
  answer: a router that dies in that time, and a retry of the same event after the
  duplicate window, would store it twice. A retry after the window takes a stream sequence
  of its own (deleted at once), so the log's sequences have gaps; readers never rely on
  there being none.
- A publish whose ack does not come within the request timeout fails the append
  (UNAVAILABLE), though JetStream may have stored the event: a retry finds it by its id,
  and durable consumers get that copy as any other, since they pull from the stream, not
  from this router's memory.
- `stored_at` is the publishing router's clock just before the publish; replay by time
  (`first_sequence_at`) goes by JetStream's own timestamps, a fraction of a millisecond
  later.
- No tail of every event is fed into the router's memory: durable consumers pull from their
  JetStream consumers. (The `append_listener` still works, fed by an ordered consumer of the
  stream, for a caller that sets it; the bus on JetStream does not.)
- A durable consumer is served by one router at a time, the holder of its lease (KV bucket
  `<name>_CONSUMER_LEASES`, router/bus/jetstream/consumer_lease.py). JetStream alone would let
  several routers pull from one consumer, but ordering keys (one event of a key in flight)
  and each Subscribe stream's in-flight bounds need one dispatcher that sees every delivery
  of the consumer. A Subscribe reaching another router is refused with UNAVAILABLE naming the
  holder, and the kit's subscriber tries again (over several routers, on the next one). The
  lease goes when the last subscriber on the holder goes (what it held unacked is nakked back
  to JetStream), or when the holder stops; after a kill -9 it is taken over once it has stood
  still for a whole lease (SOULSPOT_BUS__CONSUMER_LEASE_S), and what the dead router held
  unacked comes again once JetStream's ack_wait runs out (at least once, attempts counted;
  the kit skips repeated event_ids).
- A copy deleted as a late duplicate may reach subscribers through their JetStream
  consumers before it is deleted (delivery is at least once; repeated event_ids are skipped).
- ListEvents and dead-letter listings scan the stream page by page (no secondary index):
  their cost grows with the part of the log scanned, which for a filter that matches little
  is most of it.
- Retention: the stream's `max_age`/`max_bytes` (from the bus's retention settings) drop
  events on JetStream's own schedule; `apply_retention` also purges by age on demand.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from nats.errors import Error as NatsError
from nats.js import api
from nats.js.errors import (
    BadRequestError,
    KeyNotFoundError,
    NotFoundError,
)

from router.bus.jetstream.acks import (
    AckedPublisher,
    PublishError,
    header_value,
    publish_many_encoded,
)
from router.bus.jetstream.connection import abort_connection, connect_nats
from router.bus.jetstream.consumer_lease import ConsumerLeases
from router.bus.jetstream.direct import StoredMessage, rfc3339, stored_messages
from router.bus.jetstream.durable_consumer import JetStreamConsumer
from router.bus.jetstream.kv_listing import list_kv
from router.bus.jetstream.pull_consumer import (
    META_NAME,
    META_PATTERNS,
    PullConsumer,
    PullConsumers,
    durable_name,
)
from router.bus.jetstream.records import (
    DEAD_LETTER_HEADER,
    ConsumerState,
    consumer_from_token,
    consumer_token,
    dead_letter_header,
    decode_dead_letter,
    decode_replay,
    encode_replay,
    envelope_from,
    event_id_key,
    replay_key,
)
from router.bus.jetstream.shared_envelopes import SharedEnvelopes
from router.bus.store import (
    AppendResult,
    ConsumerRecord,
    DeadLetterRecord,
    EventPage,
    Parking,
    ReplayRecord,
)
from services.kit.support.tasks import cancel_within, finish_within
from soulspot.events.v1 import envelope_pb2
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    import itertools
    from collections.abc import Awaitable, Callable, Collection, Sequence

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

    from router.bus.consumer import Consumer
    from router.bus.consumer_ownership import Holder
    from router.bus.metrics import BusMetrics
    from router.bus.tail import TailCache

_log = logging.getLogger(__name__)

# How long consumer bookkeeping (acks, failures) may wait before its record is written.
LAZY_WRITE_S = 0.2
# How long a stored event's id may wait to be written to the ids bucket: it goes out with the
# next append's messages (one write to the socket per event instead of two) or after this.
# Within JetStream's duplicate window (far longer) the stream itself finds a repeat.
REMEMBER_DELAY_S = 0.05
# Messages per direct-get request when scanning (ListEvents, dead letters).
SCAN_PAGE = 256
# At most this many events go as one atomic batch (the server's limit is 1,000).
# Fewer than ATOMIC_BATCH_MIN go as separate publishes, sent back to back: an atomic batch
# costs nats-server (2.12) about 3.5 ms more before its ack than one publish (measured:
# 2 events 4.4 ms as a batch, 0.7 ms apart; 64 events 5.8 ms against 4.5; 200 events 9.5
# against 11.8), and under a steady load the groups stay small, so batches of a few events
# set the bus's latency.
ATOMIC_BATCH_MIN = 64
ATOMIC_BATCH_MAX = 500
# The header that marks an event parked by the cycle guard: stored, never delivered.
PARKED_HEADER = "Soulspot-Parked"
# The header of an ids-bucket write: create the key, or leave the one there as it is.
_CREATE_ONLY = b"NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: 0\r\n\r\n"
# How long one pull of a durable consumer waits for events; an empty one is followed by a
# look at the consumer (deleted through another router? its numbers for status).
PULL_WAIT_S = 1.0
# JetStream's ack_wait for durable consumers, in consumer leases: this router marks what it
# holds in progress once a lease, so only a router that died lets it run out, and the next
# holder (after one lease) gets those events again within a few more.
ACK_WAIT_LEASES = 3
# A close takes at most this many request timeouts in all (and each of its steps at least
# CLOSE_STEP_MIN_S): its steps are the last writes, the leases, the appends on their way,
# the ids, the feed, the acks and the connection, each at most a round trip when NATS answers.
CLOSE_REQUESTS = 2
CLOSE_STEP_MIN_S = 0.5

Synchronous = Literal["FULL", "NORMAL"]
# One event's ack: in already (an event of a committed atomic batch), or to come.
_Ack = tuple[int, bool] | asyncio.Future[tuple[int, bool]]
# An append waiting for the end of the loop turn: its events, their parking, its answer.
_Queued = tuple[
    "Sequence[envelope_pb2.EventEnvelope]",
    "Sequence[Parking | None]",
    "asyncio.Future[list[AppendResult]]",
]


@dataclass(slots=True)
class _Outgoing:
    """One event of an append on its way: as stored, its ids-bucket key, its place in line.
    Its headers are written as NATS header bytes here, once per message (see acks.py)."""

    stored: envelope_pb2.EventEnvelope
    key: str
    park: Parking | None
    entry: _InFlight
    data: bytes = b""
    _own: str = ""

    def __post_init__(self) -> None:
        self.data = self.stored.SerializeToString()
        # Its own headers: the id JetStream deduplicates on, and whether it is parked.
        parked = f"{PARKED_HEADER}: 1\r\n" if self.park is not None else ""
        self._own = f"Nats-Msg-Id: {header_value(self.stored.event_id)}\r\n{parked}"

    def header(self) -> bytes:
        """The headers of a publish of its own."""
        return f"NATS/1.0\r\n{self._own}\r\n".encode()

    def batch_header(self, batch_id: str, number: int, commit: bool) -> bytes:
        """The headers of the `number`th message of atomic batch `batch_id`."""
        last = "Nats-Batch-Commit: 1\r\n" if commit else ""
        return (
            f"NATS/1.0\r\n{self._own}Nats-Batch-Id: {batch_id}\r\n"
            f"Nats-Batch-Sequence: {number}\r\n{last}\r\n"
        ).encode()


def _refused(err: Exception) -> asyncio.Future[tuple[int, bool]]:
    """An event that could not be sent (too large for the server, say): its failure alone."""
    future: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
    future.set_exception(err)
    return future


@dataclass(slots=True)
class _InFlight:
    """One publish of this store, in the order it was sent: acks are handed to the
    listener in that order, which on one connection is the stream's order."""

    done: bool = False
    result: AppendResult | None = None


def _now_us() -> int:
    return time.time_ns() // 1000


def _envelope_of(msg: StoredMessage) -> envelope_pb2.EventEnvelope:
    env = envelope_from(msg.data)
    env.sequence = msg.sequence
    return env


def _dead_letter(msg: StoredMessage) -> DeadLetterRecord:
    """The dead letter a message of the dead-letter stream holds; its sequence is the id."""
    return decode_dead_letter(msg.sequence, msg.headers[DEAD_LETTER_HEADER], msg.data)


class JetStreamEventStore:
    """`EventStore` on a NATS JetStream stream and its KV buckets (see the module's text)."""

    def __init__(
        self,
        servers: Sequence[str],
        *,
        stream: str = "SOULSPOT_EVENTS",
        replicas: int = 1,
        synchronous: Synchronous = "FULL",
        duplicate_window_s: float = 120.0,
        max_age_s: float = 30 * 24 * 3600.0,
        max_bytes: int = 2 * 1024 * 1024 * 1024,
        request_timeout_s: float = 5.0,
        consumer_lease_s: float = 10.0,
    ) -> None:
        self.servers = list(servers)
        self.stream = stream
        self.dlq_stream = f"{stream}_DLQ"
        self._ids_bucket = f"{stream}_IDS"
        self.replicas = replicas
        # The level the servers are run at (see the module's text): not checked here.
        self.synchronous: Synchronous = synchronous
        self.duplicate_window_s = duplicate_window_s
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.timeout = request_timeout_s
        self.consumer_lease_s = consumer_lease_s
        # Which durable consumers this router serves (see consumer_lease.py), and whom to
        # tell when one is taken over.
        self.consumer_leases: ConsumerLeases | None = None
        self.on_consumer_lost: Callable[[str], None] | None = None
        # How this router is named to subscribers and in status (see served_as).
        self._served_as = ""
        # The JetStream consumers open here, looked at on each lease renewal tick, and the
        # events they pulled, parsed once for all of them.
        self._pulls = PullConsumers()
        self._envelopes = SharedEnvelopes()
        # Consumers this router gave up or lost: another router may be writing them now.
        self._not_ours: set[str] = set()
        self._listener: Callable[[list[AppendResult]], None] | None = None
        # The tail, only when a listener is set (the bus on JetStream sets none): the next
        # sequence to hand it, events waiting for the ones before them, and the stream's
        # own feed (every router's events, in order).
        self._next_release = 1
        self._held: dict[int, AppendResult] = {}
        self._last_reported = 0
        self._feed: Any = None
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._acks: AckedPublisher | None = None
        self._ids: KeyValue | None = None
        self._consumers_kv: KeyValue | None = None
        self._replays_kv: KeyValue | None = None
        self._states: dict[str, ConsumerState] = {}
        self._replays: dict[str, set[int]] = {}
        # Told the consumer for which a replay was queued (through any router).
        self.on_replays_queued: Callable[[str], None] | None = None
        self._replay_watch: asyncio.Task[None] | None = None
        self._dirty: set[str] = set()
        self._flush_scheduled = False
        self._in_flight: collections.deque[_InFlight] = collections.deque()
        # Appends waiting to be sent together (see append), whether a send of them is due
        # at the end of this loop turn, and how many batches are on their way.
        self._coalescing: list[_Queued] = []
        self._append_due = False
        self._appending = 0
        # Stored events whose ids are still to be written to the ids bucket (_remember_id):
        # the event id's key there, the sequence.
        self._unremembered: list[tuple[str, int]] = []
        self._remember_timer: asyncio.TimerHandle | None = None
        self._ops: asyncio.Queue[
            tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any] | None] | None
        ] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        # Mutual TLS as the router whenever the process has TLS (see jetstream/connection.py).
        self._nc = await connect_nats(
            self.servers,
            name="soulspot-bus",
            connect_timeout=self.timeout,
            error_cb=_connection_error,
            disconnected_cb=self._disconnected,
            reconnected_cb=_reconnected,
        )
        self._js = self._nc.jetstream(timeout=self.timeout)
        self._acks = AckedPublisher(self._nc, wait_s=self.timeout)
        try:
            await self._acks.start()
            await self._prepare()
        except BaseException:
            await self._nc.close()
            self._nc = self._js = None
            raise
        self._worker = asyncio.create_task(self._work(), name="jetstream-store-writer")
        assert self.consumer_leases is not None
        self.consumer_leases.start()

    async def _prepare(self) -> None:
        """The streams and buckets, created or brought to these settings; consumer state."""
        await self._ensure_stream(
            api.StreamConfig(
                name=self.stream,
                subjects=[f"{self.stream}.>"],
                storage=api.StorageType.FILE,
                num_replicas=self.replicas,
                duplicate_window=self.duplicate_window_s,
                max_age=self.max_age_s,
                max_bytes=self.max_bytes,
                discard=api.DiscardPolicy.OLD,
                allow_direct=True,
                # A multi-event append is one atomic batch: one ack, one sync.
                allow_atomic=True,
            )
        )
        await self._ensure_stream(
            api.StreamConfig(
                name=self.dlq_stream,
                subjects=[f"{self.dlq_stream}.>"],
                storage=api.StorageType.FILE,
                num_replicas=self.replicas,
                allow_direct=True,
            )
        )
        self._ids = await self._bucket(self._ids_bucket, ttl=self.max_age_s)
        self._consumers_kv = await self._bucket(f"{self.stream}_CONSUMERS")
        self._replays_kv = await self._bucket(f"{self.stream}_REPLAYS")
        self.consumer_leases = ConsumerLeases(
            await self._bucket(f"{self.stream}_CONSUMER_LEASES"),
            lease_s=self.consumer_lease_s,
            address=self._served_as,
            on_lost=self._consumer_lost,
            on_renewed=self._pulls.look,
        )
        await self._load_state()
        self._replay_watch = asyncio.create_task(
            self._watch_replays(await self._kv_replays().watchall(meta_only=True)),
            name="jetstream-replays-watch",
        )

    async def _watch_replays(self, watcher: Any) -> None:
        """Replays queued or finished through any router: the set of queued replays follows,
        and the consumer is told (its serving router may not be the one that queued it)."""
        try:
            async for entry in watcher:
                if entry is None:
                    continue
                token, _, seq = entry.key.partition(".")
                name = consumer_from_token(token)
                if entry.operation in ("DEL", "PURGE"):
                    self._replays.get(name, set()).discard(int(seq))
                    continue
                self._replays.setdefault(name, set()).add(int(seq))
                if self.on_replays_queued is not None:
                    self.on_replays_queued(name)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def _ensure_stream(self, config: api.StreamConfig) -> None:
        js = self._jetstream()
        try:
            await js.add_stream(config)
        except BadRequestError:
            # It exists with other settings (a changed retention, say): take ours.
            await js.update_stream(config)

    async def _bucket(self, name: str, *, ttl: float | None = None) -> KeyValue:
        js = self._jetstream()
        config = api.KeyValueConfig(
            bucket=name,
            history=1,
            ttl=ttl,
            storage=api.StorageType.FILE,
            replicas=self.replicas,
            direct=True,
        )
        try:
            return await js.create_key_value(config)
        except BadRequestError:
            return await js.key_value(name)

    async def _load_state(self) -> None:
        # One listing per bucket, values read with the keys (list_kv: nats-py's keys() may
        # end before a key just written arrives).
        js = self._jetstream()
        for key, value in (await list_kv(js, f"{self.stream}_CONSUMERS", ">")).items():
            if value:
                self._states[consumer_from_token(key)] = ConsumerState.decode(value)
        for key in await list_kv(js, f"{self.stream}_REPLAYS", ">", values=False):
            token, _, seq = key.partition(".")
            self._replays.setdefault(consumer_from_token(token), set()).add(int(seq))

    async def close(self) -> None:
        """Write what is due, give the leases up and disconnect, each step within what is
        left of CLOSE_REQUESTS request timeouts (at least CLOSE_STEP_MIN_S each): a router
        whose NATS is out of reach still stops, logging what it could not do. What is lost
        then is made up for: a lease not given up goes stale for the next router, and an
        ack not sent is delivered again by JetStream once its ack_wait runs out
        (deliveries are at least once)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_REQUESTS * self.timeout

        def left() -> float:
            return max(CLOSE_STEP_MIN_S, deadline - loop.time())

        async def step(what: str, work: Awaitable[Any]) -> bool:
            within = left()
            try:
                if await finish_within(work, within):
                    return True
                _log.warning(
                    "closing the event store: %s did not finish within %.1fs", what, within
                )
            except Exception as err:
                _log.warning("closing the event store: %s failed: %s", what, err)
            return False

        await cancel_within(self._replay_watch, left())
        self._replay_watch = None
        worker = self._worker
        if worker is not None:
            if not worker.done():
                await step("writing the consumers' state", self._run(self._flush))
                self._ops.put_nowait(None)
                await step("the state writer's last writes", worker)
            self._worker = None
        if self.consumer_leases is not None:
            # After the last write of every consumer's state: the next router reads it.
            await step("giving the consumer leases up", self.consumer_leases.close())
        if self._background:
            await step(
                "the appends on their way",
                asyncio.gather(*self._background, return_exceptions=True),
            )
        if self._remember_timer is not None:
            self._remember_timer.cancel()
            self._remember_timer = None
        if self._unremembered and self._nc is not None:
            await step("writing the event ids", self._write_ids_now())
        if self._feed is not None:
            feed, self._feed = self._feed, None
            await step("ending the stream's feed", self._end_feed(feed))
        if self._acks is not None:
            acks, self._acks = self._acks, None
            await step("ending the acks subscription", acks.stop())
        if self._nc is not None:
            nc, self._nc = self._nc, None
            if not await step("closing the NATS connection", nc.close()):
                abort_connection(nc)

    async def _write_ids_now(self) -> None:
        await self._write_ids()
        await self._client().flush(max(1, round(self.timeout)))

    @staticmethod
    async def _end_feed(feed: Any) -> None:
        await (await feed).unsubscribe()

    async def _disconnected(self) -> None:
        if self._acks is not None:  # not closing
            _log.warning("NATS connection lost: the event log is unavailable until it is back")

    # -- plumbing --------------------------------------------------------------------------

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("event store is not open")
        return self._js

    def _publisher(self) -> AckedPublisher:
        if self._acks is None:
            raise RuntimeError("event store is not open")
        return self._acks

    def _client(self) -> Client:
        if self._nc is None:
            raise RuntimeError("event store is not open")
        return self._nc

    def _kv_consumers(self) -> KeyValue:
        assert self._consumers_kv is not None, "event store is not open"
        return self._consumers_kv

    def _kv_replays(self) -> KeyValue:
        assert self._replays_kv is not None, "event store is not open"
        return self._replays_kv

    async def _work(self) -> None:
        # Consumer state changes one at a time, in the order they were queued (a replay's
        # park before its done record, a read of replays after the progress before it).
        try:
            while (item := await self._ops.get()) is not None:
                op, future = item
                try:
                    value = await op()
                except Exception as err:
                    if future is None:
                        _log.exception("event store write failed")
                    elif not future.done():
                        future.set_exception(err)
                    continue
                if future is not None and not future.done():
                    future.set_result(value)
        finally:
            # Ended (closed, or cancelled at a close that ran out of time): nothing will run
            # what is still queued, so nobody may wait for it.
            while not self._ops.empty():
                queued = self._ops.get_nowait()
                if queued is not None and queued[1] is not None and not queued[1].done():
                    queued[1].set_exception(RuntimeError("event store is not open"))

    async def _run(self, op: Callable[[], Awaitable[Any]]) -> Any:
        if self._worker is None or self._worker.done():
            raise RuntimeError("event store is not open")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops.put_nowait((op, future))
        return await future

    def _queue(self, op: Callable[[], Awaitable[Any]]) -> None:
        if self._worker is None or self._worker.done():
            raise RuntimeError("event store is not open")
        self._ops.put_nowait((op, None))

    def _mark_dirty(self, name: str) -> None:
        self._dirty.add(name)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(LAZY_WRITE_S, self._queue_flush)

    def _queue_flush(self) -> None:
        if self._worker is not None:
            self._queue(self._flush)

    async def _flush(self) -> None:
        self._flush_scheduled = False
        names, self._dirty = self._dirty, set()
        kv = self._kv_consumers()
        writes = [
            kv.put(consumer_token(name), self._states[name].encode())
            for name in names
            if name in self._states and self._serves(name)
        ]
        await asyncio.gather(*writes)

    async def _get(self, stream: str, sequence: int) -> StoredMessage | None:
        found = await self._page(stream, {"seq": sequence})
        return found[0] if found and found[0].sequence == sequence else None

    async def _page(self, stream: str, request: dict[str, Any]) -> list[StoredMessage]:
        subject, data = f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode()
        acks = self._publisher()
        if "batch" in request:
            return stored_messages(stream, await (await acks.request_batch(subject, data)))
        return stored_messages(stream, [await (await acks.request(subject, data))])

    # -- the log ---------------------------------------------------------------------------

    async def append(
        self,
        envelopes: Sequence[envelope_pb2.EventEnvelope],
        parking: Sequence[Parking | None],
    ) -> list[AppendResult]:
        # Group commit: the appends that arrive while none is on its way go at the end of
        # the loop turn; those that arrive while one is go together once it is answered (see
        # _coalesced): one id lookup, one socket write, and for ATOMIC_BATCH_MIN events or
        # more one atomic batch with one ack. An
        # idle store sends each at once; the busier it is, the larger the batches and the
        # lower the cost per event, so it keeps up where one send per event would fall
        # behind.
        # A publisher that goes away mid-append cancels only its answer: its events are
        # sent and accounted for all the same, or the listener would wait for them forever.
        return await self.append_soon(envelopes, parking)

    def append_soon(
        self,
        envelopes: Sequence[envelope_pb2.EventEnvelope],
        parking: Sequence[Parking | None],
    ) -> asyncio.Future[list[AppendResult]]:
        future: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()
        self._coalescing.append((envelopes, parking, future))
        self._flush_appends()
        return future

    def _flush_appends(self) -> None:
        """Send the queued appends at the end of this loop turn, unless some are on their
        way (their answer sends the rest)."""
        if self._coalescing and not self._appending and not self._append_due:
            self._append_due = True
            asyncio.get_running_loop().call_soon(self._coalesced)

    def _appended(self, _task: asyncio.Future[None]) -> None:
        self._appending -= 1
        self._flush_appends()

    def _coalesced(self) -> None:
        """Send the queued appends, in their order, as few batches: one per ATOMIC_BATCH_MAX
        events, and a new one where an event_id repeats (that batch waits for the one
        before, so the first copy is stored before the second is sent)."""
        self._append_due = False
        queued, self._coalescing = self._coalescing, []
        groups: list[tuple[list[_Queued], bool]] = []
        size, ids = ATOMIC_BATCH_MAX + 1, set[str]()
        for item in queued:
            item_ids = {e.event_id for e in item[0]}
            repeats = not ids.isdisjoint(item_ids)
            if repeats or size + len(item[0]) > ATOMIC_BATCH_MAX:
                groups.append(([], repeats))
                size, ids = 0, set()
            groups[-1][0].append(item)
            size += len(item[0])
            ids |= item_ids
        before: asyncio.Future[None] | None = None
        for group, wait in groups:
            task = asyncio.ensure_future(self._append_group(group, before if wait else None))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            self._appending += 1
            task.add_done_callback(self._appended)
            before = task

    async def _append_group(
        self, group: list[_Queued], before: asyncio.Future[None] | None
    ) -> None:
        """Append the events of `group` as one and answer each append with its own events'
        results, or with the failure of one of them."""
        if before is not None:
            await asyncio.wait([before])
        envelopes = [e for item in group for e in item[0]]
        parking = [p for item in group for p in item[1]]
        try:
            outcomes = await self._append(envelopes, parking)
        except BaseException as err:
            for _, _, future in group:
                if future.done():
                    continue
                if isinstance(err, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(err)
            if not isinstance(err, Exception):
                raise
            return
        start = 0
        for item_envelopes, _, future in group:
            mine = outcomes[start : start + len(item_envelopes)]
            start += len(item_envelopes)
            if future.done():
                continue
            failure = next((o for o in mine if isinstance(o, BaseException)), None)
            if failure is not None:
                future.set_exception(failure)
            else:
                future.set_result([o for o in mine if isinstance(o, AppendResult)])

    async def _append(
        self,
        envelopes: Sequence[envelope_pb2.EventEnvelope],
        parking: Sequence[Parking | None],
    ) -> list[AppendResult | Exception]:
        """Each event's result, or what kept it from being stored."""
        # The ids bucket is asked and the events published back to back, one round trip in
        # all: an event the bucket knows (stored before, beyond JetStream's duplicate window)
        # has its new copy deleted before anyone here is told of it.
        # Each event's key in the ids bucket, once: the lookup asks it, the write sets it.
        keys = [event_id_key(e.event_id) for e in envelopes]
        lookup = await self._lookup_ids(keys)
        outgoing: list[_Outgoing] = []
        for env, park, key in zip(envelopes, parking, keys, strict=True):
            stored = envelope_pb2.EventEnvelope()
            stored.CopyFrom(env)
            stored.sequence = 0  # the stream's sequence, set on every read
            stored.stored_at.FromMicroseconds(_now_us())  # sets both its fields
            entry = _InFlight()
            self._in_flight.append(entry)
            outgoing.append(_Outgoing(stored, key, park, entry))
        try:
            acks = await self._send(outgoing)
            earlier = await lookup
        except BaseException:
            for out in outgoing:
                out.entry.done = True
            self._release()
            raise
        results: list[AppendResult | Exception] = []
        for index, (out, first) in enumerate(zip(outgoing, earlier, strict=True)):
            ack = acks[index]
            if not isinstance(ack, tuple) and not ack.done():
                # The events settled so far go to the listener before this one's ack is
                # awaited; those of a committed batch go to it together, below, so that a
                # caught-up subscriber gets them in one delivery.
                self._release()
            try:
                if isinstance(ack, tuple) and first is None and not ack[1] and out.park is None:
                    # The common case (acked, new, not parked): no coroutine per event.
                    results.append(self._stored(out, ack[0]))
                    continue
                results.append(await self._settle(out, ack, first))
            except Exception as err:
                # Its place in line is given up, so the events after it still reach the
                # listener.
                out.entry.done = True
                results.append(err)
        self._release()
        return results

    async def _settle(self, out: _Outgoing, ack: _Ack, first: int | None) -> AppendResult:
        """One sent event's result, once JetStream acked it (`first`: where the ids bucket
        says the event was stored before)."""
        seq, duplicate = ack if isinstance(ack, tuple) else await ack
        if first is not None and first != seq and not duplicate:
            # Stored before the window: this copy goes, the first one answers.
            await self._jetstream().delete_msg(self.stream, seq)
            duplicate, seq = True, first
        if duplicate:
            out.entry.done = True
            result = await self._duplicate(first or seq)
            if first is None:
                # Stored by an earlier try whose answer never came (a batch's commit ack that
                # timed out): only the duplicate window knows it, so the ids bucket learns it
                # here, or a try after the window would store it again.
                self._remember_id(out.key, seq)
            return result
        result = self._stored(out, seq)
        if out.park is not None:
            self._release()
            data = out.stored.SerializeToString()
            await self._publish_dead_letter("", seq, out.park.reason, 0, out.park.detail, data)
        return result

    def _stored(self, out: _Outgoing, seq: int) -> AppendResult:
        """A sent event's result once stored at `seq` as a new event: in line for the
        listener, its id on its way to the ids bucket."""
        out.stored.sequence = seq
        if out.park is None:
            # The consumers' pulls bring these bytes back: they share this envelope.
            self._envelopes.offer(seq, out.data, out.stored)
        result = AppendResult(seq, False, out.stored, parked=out.park is not None)
        out.entry.result, out.entry.done = result, True
        self._remember_id(out.key, seq)
        return result

    async def _send(self, outgoing: list[_Outgoing]) -> list[_Ack]:
        """Publish the events in order; each one's (sequence, duplicate), or a future of it
        (or of why that one was not sent).

        From ATOMIC_BATCH_MIN on, they go as one atomic batch (one ack for the lot,
        consecutive sequences); fewer go one by one, back to back. JetStream
        refuses a batch holding an event_id it has seen within its duplicate window, and a
        batch may go unanswered, or not go whole (an event too large for the server): then
        they go again one by one, and the duplicate window keeps any that did get stored
        from being stored twice."""
        if not ATOMIC_BATCH_MIN <= len(outgoing) <= ATOMIC_BATCH_MAX:
            return [await self._send_one(o) for o in outgoing]
        batch_id = uuid.uuid4().hex
        last = len(outgoing)
        client = self._client()
        try:
            # All but the commit in one write: the batch is one command to nats-py.
            await publish_many_encoded(
                client,
                [
                    (self._subject(out), out.data, out.batch_header(batch_id, number, False))
                    for number, out in enumerate(outgoing[:-1], 1)
                ],
            )
            out = outgoing[-1]
            commit = await self._publisher().send(
                self._subject(out), out.data, out.batch_header(batch_id, last, True)
            )
            last_seq, _ = await commit
        except (PublishError, NatsError):
            return [await self._send_one(o) for o in outgoing]
        return [(last_seq - last + n, False) for n in range(1, last + 1)]

    async def _send_one(self, out: _Outgoing) -> asyncio.Future[tuple[int, bool]]:
        try:
            return await self._publisher().send(self._subject(out), out.data, out.header())
        except NatsError as err:
            return _refused(err)

    def _subject(self, out: _Outgoing) -> str:
        return f"{self.stream}.{out.stored.event_type}"

    def _release(self) -> None:
        """Offer the listener the acked appends at the head of the send order."""
        while self._in_flight and self._in_flight[0].done:
            result = self._in_flight.popleft().result
            if result is not None and result.sequence >= self._next_release:
                self._held[result.sequence] = result
        self._hand_over(self._next_release - 1)

    def _hand_over(self, through: int) -> None:
        """Give the listener, in log order, every held event up to `through` (the stream
        has nothing else there: the feed passed it) and then those that follow on."""
        out: list[AppendResult] = []
        if through >= self._next_release:
            out = [self._held.pop(s) for s in sorted(s for s in self._held if s <= through)]
            self._next_release = through + 1
        while self._next_release in self._held:
            out.append(self._held.pop(self._next_release))
            self._next_release += 1
        if out and self._listener is not None:
            self._listener(out)

    @property
    def append_listener(self) -> Callable[[list[AppendResult]], None] | None:
        return self._listener

    @append_listener.setter
    def append_listener(self, listener: Callable[[list[AppendResult]], None] | None) -> None:
        # Only for a caller that sets a listener: the bus on JetStream does not (its
        # consumers pull from JetStream). The tail (this router's appends and, through the
        # feed, every other router's) goes on from the last sequence reported.
        self._listener = listener
        if listener is not None and self._feed is None and self._nc is not None:
            self._next_release = self._last_reported + 1
            self._held = {s: r for s, r in self._held.items() if s >= self._next_release}
            self._feed = asyncio.ensure_future(self._follow(self._next_release))

    async def _follow(self, start: int) -> Any:
        """An ordered consumer of the whole stream from `start`: events other routers
        stored reach this router's subscribers, and gaps (deleted copies) are passed."""
        return await self._jetstream().subscribe(
            f"{self.stream}.>",
            cb=self._on_feed,
            ordered_consumer=True,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
            ),
        )

    async def _on_feed(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq < self._next_release:
            return  # this router's own append, handed over at its ack
        if seq not in self._held:
            env = envelope_from(msg.data)
            env.sequence = seq
            parked = PARKED_HEADER in (msg.headers or {})
            self._held[seq] = AppendResult(seq, False, env, parked=parked)
        self._hand_over(seq)

    async def _lookup_id(self, event_id: str) -> int | None:
        (found,) = await (await self._lookup_ids([event_id_key(event_id)]))
        return found

    async def _lookup_ids(self, keys: Sequence[str]) -> Awaitable[list[int | None]]:
        """Ask the ids bucket where each event was stored, by its key there (`event_id_key`;
        None: not there), one direct get for the lot; the request leaves now, the answer is
        awaited later."""
        # This store's ids still to be written go first, so the lookup sees them.
        await self._write_ids()
        subjects = [f"$KV.{self._ids_bucket}.{key}" for key in keys]
        stream = f"KV_{self._ids_bucket}"
        if len(subjects) == 1:
            # The subject form of a direct get, on the shared inbox.
            reply = await self._publisher().request(
                f"$JS.API.DIRECT.GET.{stream}.{subjects[0]}", b""
            )

            async def one() -> list[int | None]:
                msg = await reply
                headers = msg.headers or {}
                if headers.get("Status") or headers.get("KV-Operation") is not None:
                    return [None]
                return [int(msg.data or b"0") or None]

            return one()
        request = json.dumps({"multi_last": subjects, "batch": len(subjects)}).encode()
        replies = await self._publisher().request_batch(f"$JS.API.DIRECT.GET.{stream}", request)

        async def many() -> list[int | None]:
            found = {
                m.subject: int(m.data or b"0")
                for m in stored_messages(stream, await replies)
                if m.headers.get("KV-Operation") is None
            }
            return [found.get(subject) or None for subject in subjects]

        return many()

    async def _duplicate(self, sequence: int) -> AppendResult:
        msg = await self._get(self.stream, sequence)
        if msg is None:
            raise RuntimeError(f"event {sequence} is gone from the log")
        return AppendResult(sequence, True, _envelope_of(msg))

    def _remember_id(self, key: str, sequence: int) -> None:
        """Have the event's key (`event_id_key`) created in the ids bucket, with the next
        append's messages or within REMEMBER_DELAY_S (see _write_ids)."""
        self._unremembered.append((key, sequence))
        if self._remember_timer is None:
            loop = asyncio.get_running_loop()
            self._remember_timer = loop.call_later(REMEMBER_DELAY_S, self._remember_soon)

    def _remember_soon(self) -> None:
        self._remember_timer = None
        if self._unremembered and self._nc is not None:
            task = asyncio.ensure_future(self._write_ids())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _write_ids(self) -> None:
        """Create each waiting event's key in the ids bucket unless it exists, without
        waiting for JetStream's answer (a key that exists stays as it is: the first copy's
        sequence)."""
        waiting, self._unremembered = self._unremembered, []
        prefix = f"$KV.{self._ids_bucket}."
        await publish_many_encoded(
            self._client(),
            [(prefix + key, str(sequence).encode(), _CREATE_ONLY) for key, sequence in waiting],
        )

    async def _last_sequence(self, stream: str) -> int:
        info = await self._jetstream().stream_info(stream)
        return int(info.state.last_seq or 0)

    async def last_sequence(self) -> int:
        self._last_reported = await self._last_sequence(self.stream)
        return self._last_reported

    async def first_sequence_at(self, time_us: int) -> int:
        found = await self._page(self.stream, {"start_time": rfc3339(time_us)})
        if found:
            return found[0].sequence
        return await self.last_sequence() + 1

    async def read_after(
        self, after: int, limit: int, *, include_parked: bool = False
    ) -> EventPage:
        found = await self._page(self.stream, {"seq": after + 1, "batch": max(1, limit)})
        # Fewer than asked: the end of the log as it was; the scan got to its last message.
        scanned = found[-1].sequence if found else after
        events = [
            _envelope_of(m) for m in found if include_parked or PARKED_HEADER not in m.headers
        ]
        return EventPage(events, max(after, scanned))

    async def read_sequences(self, sequences: Sequence[int]) -> list[envelope_pb2.EventEnvelope]:
        found = await asyncio.gather(*(self._get(self.stream, s) for s in sequences))
        return [_envelope_of(m) for m in found if m is not None]

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
        def wanted(env: envelope_pb2.EventEnvelope) -> bool:
            if correlation_id and env.correlation_id != correlation_id:
                return False
            # SQLite's GLOB: case-sensitive * ? and [...], as fnmatchcase reads them.
            return not type_globs or any(fnmatch.fnmatchcase(env.event_type, g) for g in type_globs)

        out: list[envelope_pb2.EventEnvelope] = []
        info = await self._jetstream().stream_info(self.stream)
        first, last = int(info.state.first_seq or 0), int(info.state.last_seq or 0)
        low = max(after or 0, first - 1)
        high = min(last, before - 1 if before is not None else last)
        if oldest_first:
            position = low
            while position < high and len(out) < limit:
                page = await self._page(self.stream, {"seq": position + 1, "batch": SCAN_PAGE})
                if not page:
                    break
                for msg in page:
                    if msg.sequence > high:
                        return out
                    env = _envelope_of(msg)
                    if wanted(env):
                        out.append(env)
                        if len(out) == limit:
                            return out
                position = page[-1].sequence
            return out
        while high > low and len(out) < limit:
            start = max(low + 1, high - SCAN_PAGE + 1)
            page = await self._page(self.stream, {"seq": start, "batch": high - start + 1})
            for msg in reversed(page):
                if msg.sequence > high:
                    continue
                env = _envelope_of(msg)
                if wanted(env):
                    out.append(env)
                    if len(out) == limit:
                        return out
            high = start - 1
        return out

    async def apply_retention(self, max_age_s: float, max_bytes: int) -> int:
        js = self._jetstream()
        before = await js.stream_info(self.stream)
        if (max_age_s, max_bytes) != (self.max_age_s, self.max_bytes):
            # The stream enforces both on its own from now on.
            self.max_age_s, self.max_bytes = max_age_s, max_bytes
            config = before.config
            config.max_age, config.max_bytes = max_age_s, max_bytes
            await js.update_stream(config)
        cutoff = await self.first_sequence_at(_now_us() - int(max_age_s * 1_000_000))
        if cutoff > int(before.state.first_seq or 0):
            await js.purge_stream(self.stream, seq=cutoff)
        after = await js.stream_info(self.stream)
        return max(0, int(before.state.messages) - int(after.state.messages))

    # -- consumers -------------------------------------------------------------------------

    def _serves(self, name: str) -> bool:
        """Whether this router may write the consumer's record: not once it let the
        consumer go or lost its lease, until it claims it again."""
        return name not in self._not_ours

    def _consumer_lost(self, name: str) -> None:
        # Another router serves it now: nothing of this router's is written for it again.
        self._not_ours.add(name)
        self._dirty.discard(name)
        if self.on_consumer_lost is not None:
            self.on_consumer_lost(name)

    async def _reload(self, name: str) -> None:
        """The consumer's record as last written, whoever wrote it (not this router's copy);
        called once this router holds the consumer's lease."""
        self._not_ours.discard(name)
        self._states.pop(name, None)
        state = await self._written_state(name)
        if state is not None:
            self._states[name] = state

    async def _written_state(self, name: str) -> ConsumerState | None:
        """The consumer's record as its key holds it (None: no record)."""
        try:
            entry = await self._kv_consumers().get(consumer_token(name))
        except KeyNotFoundError:
            return None
        return ConsumerState.decode(entry.value) if entry.value else None

    @property
    def served_as(self) -> str:
        """This router's name in its consumer leases (status's `answered_by`: host:port)."""
        return self._served_as

    @served_as.setter
    def served_as(self, name: str) -> None:
        self._served_as = name
        if self.consumer_leases is not None:
            # Written with the next renewal of every lease held.
            self.consumer_leases.address = name

    async def claim_consumer(self, name: str) -> Holder | None:
        """Serve `name` here: None once this router holds its lease (its record read again
        from the bucket), else the router that holds it."""
        assert self.consumer_leases is not None, "event store is not open"
        holder = await self.consumer_leases.claim(name)
        if holder is None:
            await self._run(lambda: self._reload(name))
        return holder

    async def release_consumer(self, name: str) -> None:
        """Write the consumer's state (after the writes queued before), then let it go."""

        async def op() -> None:
            state = self._states.get(name)
            if state is not None and self._serves(name):
                self._dirty.discard(name)
                await self._kv_consumers().put(consumer_token(name), state.encode())
            self._not_ours.add(name)

        await self._run(op)
        if self.consumer_leases is not None:
            await self.consumer_leases.release(name)

    # -- durable consumers as JetStream consumers -----------------------------------------

    @property
    def ack_wait_s(self) -> float:
        """JetStream's ack_wait for the durable consumers (see ACK_WAIT_LEASES)."""
        return ACK_WAIT_LEASES * self.consumer_lease_s

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
        """The durable consumer `record` names, served by this router from its JetStream
        consumer: created from record.floor + 1 when JetStream has none, else as JetStream
        holds it (its position stays; patterns and attempts follow the record)."""
        pull = PullConsumer(
            self._client(),
            self._jetstream(),
            stream=self.stream,
            name=record.name,
            ack_wait_s=self.ack_wait_s,
            pull_wait_s=PULL_WAIT_S,
            on_gone=self._consumer_gone,
        )
        info = await pull.open(record.patterns, record.floor, max_attempts, page_size)
        self._pulls.add(pull)
        delivered = info.delivered.stream_seq if info.delivered is not None else 0
        acked = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        return JetStreamConsumer(
            record,
            pull=pull,
            park=self.park_copy,
            ack_floor=int(acked),
            delivered_to=int(delivered),
            touch_s=self.consumer_lease_s,
            store=self,
            cache=cache,
            delivery_ids=delivery_ids,
            page_size=page_size,
            max_attempts=max_attempts,
            metrics=metrics,
            envelopes=self._envelopes,
        )

    def park_copy(
        self, consumer: str, sequence: int, reason: int, attempts: int, last_error: str, data: bytes
    ) -> asyncio.Future[None]:
        """Queue a dead letter carrying `data` (the event as the consumer read it); done once
        JetStream holds it."""
        if self._worker is None:
            raise RuntimeError("event store is not open")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def op() -> None:
            await self._publish_dead_letter(consumer, sequence, reason, attempts, last_error, data)

        self._ops.put_nowait((op, future))
        return future

    def _consumer_gone(self, name: str) -> None:
        """The JetStream consumer was deleted (through another router): nothing of this
        router's is written for it again, its subscribers' streams end, its lease goes."""
        self._states.pop(name, None)
        self._replays.pop(name, None)
        self._dirty.discard(name)
        self._not_ours.add(name)
        if self.on_consumer_lost is not None:
            self.on_consumer_lost(name)
        leases = self.consumer_leases
        if leases is not None:
            task = asyncio.ensure_future(leases.release(name))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def consumer_statuses(self, skip: Collection[str] = ()) -> list[router_pb2.ConsumerInfo]:
        """Every durable consumer of the stream as JetStream counts it (those in `skip`
        left out), with the router that serves it, whichever router asks."""
        js, out = self._jetstream(), []
        offset = 0
        while True:
            page = await js.consumers_info(self.stream, offset=offset)
            offset += len(page)
            for info in page:
                metadata = info.config.metadata or {}
                name = metadata.get(META_NAME) or consumer_from_token(info.name)
                if name in skip or not info.config.durable_name:
                    continue
                holder = None
                if self.consumer_leases is not None:
                    holder = await self.consumer_leases.holder(name)
                pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
                out.append(
                    router_pb2.ConsumerInfo(
                        name=name,
                        event_types=json.loads(metadata.get(META_PATTERNS, "[]")),
                        acked_sequence=int(info.ack_floor.stream_seq if info.ack_floor else 0),
                        lag=pending,
                        in_flight=int(info.num_ack_pending or 0),
                        served_by=holder.name() if holder is not None else "",
                        redelivered=int(info.num_redelivered or 0),
                    )
                )
            if len(page) < 256 or not page:
                return out

    async def load_consumer(self, name: str) -> ConsumerRecord | None:
        async def op() -> ConsumerRecord | None:
            state = self._states.get(name)
            if state is None:
                # Written by another router on the stream since this one opened, perhaps.
                state = await self._written_state(name)
                if state is not None:
                    self._states[name] = state
            if state is None:
                return None
            record = state.record(name)
            record.replays = len(self._replays.get(name, ()))
            return record

        found: ConsumerRecord | None = await self._run(op)
        return found

    async def save_consumer(
        self,
        name: str,
        patterns: Sequence[str],
        floor: int,
        *,
        inactive_s: float = 0.0,
        owner: str = "",
    ) -> None:
        async def op() -> None:
            state = self._states.get(name)
            if state is None:
                state = self._states[name] = ConsumerState(tuple(patterns), floor, owner=owner)
            state.patterns = tuple(patterns)
            state.inactive_s = inactive_s
            # An owner, once set, stays: only a consumer without one takes the new one.
            state.owner = state.owner or owner
            self._dirty.discard(name)
            await self._kv_consumers().put(consumer_token(name), state.encode())

        await self._run(op)

    async def _forget(self, name: str) -> bool:
        existed = self._states.pop(name, None) is not None
        self._dirty.discard(name)
        if existed:
            await self._kv_consumers().delete(consumer_token(name))
        for seq in self._replays.pop(name, set()):
            await self._kv_replays().delete(replay_key(name, seq))
        try:
            await self._jetstream().delete_consumer(self.stream, durable_name(name))
        except NotFoundError:
            pass
        else:
            existed = True
        return existed

    async def delete_consumer(self, name: str) -> bool:
        async def op() -> bool:
            return await self._forget(name)

        deleted: bool = await self._run(op)
        return deleted

    def set_consumer_idle(self, name: str, since_us: int) -> None:
        async def op() -> None:
            state = self._states.get(name)
            if state is not None:
                state.idle_since_us = since_us
                self._mark_dirty(name)

        self._queue(op)

    async def consumers_idle_from(self, since_us: int) -> None:
        async def op() -> None:
            for name, state in self._states.items():
                if state.inactive_s > 0 and state.idle_since_us == 0:
                    if self.consumer_leases is not None and await self.consumer_leases.is_held(
                        name
                    ):
                        # Served by another router: its record is that router's to write.
                        self._not_ours.add(name)
                        continue
                    state.idle_since_us = since_us
                    self._dirty.add(name)
            await self._flush()

        await self._run(op)

    async def expire_consumers(
        self, now_us: int, *, keep: Collection[str], also: Collection[str] = ()
    ) -> tuple[list[str], int | None]:
        kept = set(keep)

        async def op() -> tuple[list[str], int | None]:
            due = {
                name: state.idle_since_us + int(state.inactive_s * 1_000_000)
                for name, state in self._states.items()
                if state.inactive_s > 0 and state.idle_since_us > 0 and name not in kept
            }
            names = sorted({n for n, at in due.items() if at <= now_us} | (set(also) - kept))
            leases = self.consumer_leases
            if leases is not None:
                names = [n for n in names if await self._expirable(n, now_us, n in also)]
            for name in names:
                await self._forget(name)
                if leases is not None:
                    await self._let_go(name)
            later = [at for n, at in due.items() if n not in names]
            return names, (min(later) if later else None)

        expired: tuple[list[str], int | None] = await self._run(op)
        return expired

    async def _let_go(self, name: str) -> None:
        assert self.consumer_leases is not None
        self._not_ours.add(name)
        await self.consumer_leases.release(name)

    async def _expirable(self, name: str, now_us: int, forced: bool) -> bool:
        """Whether an idle consumer may be removed by this router: it holds the consumer's
        lease (claimed here when free), and the record as last written is still due."""
        assert self.consumer_leases is not None
        if not self.consumer_leases.holds(name):
            if await self.consumer_leases.claim(name) is not None:
                return False  # served by another router, which removes it when it is due
            await self._reload(name)
        if forced:
            return True
        state = self._states.get(name)
        if state is None or state.inactive_s <= 0 or state.idle_since_us <= 0:
            await self._let_go(name)
            return False
        if state.idle_since_us + int(state.inactive_s * 1_000_000) > now_us:
            await self._let_go(name)
            return False
        return True

    def record_progress(
        self,
        consumer: str,
        floor: int,
        *,
        done: Sequence[int],
        cleared: Sequence[int],
        replays_done: Sequence[int],
    ) -> None:
        done, finished = list(done), [*cleared, *replays_done]

        async def op() -> None:
            queued = self._replays.get(consumer, set())
            gone = [s for s in finished if s in queued]
            for seq in gone:
                queued.discard(seq)
            if gone:
                replays = self._kv_replays()
                await asyncio.gather(*(replays.delete(replay_key(consumer, s)) for s in gone))
            state = self._states.get(consumer)
            if state is None:
                return
            for seq in finished:
                state.pending.pop(seq, None)
            if floor > state.floor:
                state.floor = floor
                state.done = {s for s in state.done if s > floor}
                state.pending = {s: p for s, p in state.pending.items() if s > floor}
            state.done.update(s for s in done if s > state.floor)
            self._mark_dirty(consumer)

        self._queue(op)

    def record_failure(
        self, consumer: str, sequence: int, attempts: int, last_error: str, replay: bool
    ) -> None:
        async def op() -> None:
            if replay:
                if sequence not in self._replays.get(consumer, set()):
                    return
                replays = self._kv_replays()
                key = replay_key(consumer, sequence)
                entry = await replays.get(key)
                _, _, data = decode_replay(entry.value or b"")
                await replays.put(key, encode_replay(attempts, last_error, data))
                return
            state = self._states.get(consumer)
            if state is not None:
                state.pending[sequence] = (attempts, last_error)
                self._mark_dirty(consumer)

        self._queue(op)

    def park(
        self, consumer: str, sequence: int, reason: int, attempts: int, last_error: str
    ) -> None:
        async def op() -> None:
            # The event from the log or, for a replay whose event retention has removed
            # since, the copy its replay carried (queued before the replay's done record,
            # so that key is still there).
            data = await self._event_bytes(consumer, sequence)
            if data is None:
                _log.warning(
                    "event %d of consumer %s is gone from the log: not parked",
                    sequence,
                    consumer,
                    extra={"consumer": consumer, "sequence": sequence},
                )
                return
            await self._publish_dead_letter(consumer, sequence, reason, attempts, last_error, data)

        self._queue(op)

    async def _event_bytes(self, consumer: str, sequence: int) -> bytes | None:
        msg = await self._get(self.stream, sequence)
        if msg is not None:
            return _envelope_of(msg).SerializeToString()
        if sequence in self._replays.get(consumer, set()):
            with contextlib.suppress(KeyNotFoundError):
                entry = await self._kv_replays().get(replay_key(consumer, sequence))
                return decode_replay(entry.value or b"")[2]
        return None

    async def _publish_dead_letter(
        self,
        consumer: str,
        sequence: int,
        reason: int,
        attempts: int,
        last_error: str,
        data: bytes,
    ) -> None:
        header = dead_letter_header(consumer, sequence, reason, attempts, last_error, _now_us())
        await self._jetstream().publish(
            f"{self.dlq_stream}.{consumer_token(consumer)}",
            data,
            stream=self.dlq_stream,
            headers={DEAD_LETTER_HEADER: header},
        )

    # -- dead letters ----------------------------------------------------------------------

    async def _settled(self) -> None:
        """Wait for the consumer writes queued so far (dead letters among them)."""

        async def nothing() -> None:
            return None

        await self._run(nothing)

    async def _dead_letters(self, consumer: str) -> list[DeadLetterRecord]:
        """Every dead letter (of one consumer, or all), oldest first."""
        request: dict[str, Any] = {"batch": SCAN_PAGE}
        if consumer:
            request["next_by_subj"] = f"{self.dlq_stream}.{consumer_token(consumer)}"
        out: list[DeadLetterRecord] = []
        position = 0
        while True:
            page = await self._page(self.dlq_stream, {**request, "seq": position + 1})
            out.extend(_dead_letter(m) for m in page)
            if len(page) < SCAN_PAGE:
                return out
            position = page[-1].sequence

    async def list_dead_letters(self, consumer: str, limit: int) -> list[DeadLetterRecord]:
        await self._settled()
        letters = await self._dead_letters(consumer)
        return list(reversed(letters[-limit:])) if limit > 0 else []

    async def get_dead_letter(self, dead_letter_id: int) -> DeadLetterRecord | None:
        await self._settled()
        msg = await self._get(self.dlq_stream, dead_letter_id)
        if msg is None:
            return None
        return _dead_letter(msg)

    async def take_dead_letters(self, ids: Sequence[int], consumer: str) -> dict[str, int]:
        wanted = list(ids)

        async def op() -> dict[str, int]:
            if wanted:
                found = await asyncio.gather(*(self._get(self.dlq_stream, i) for i in wanted))
                letters = [_dead_letter(m) for m in found if m is not None]
            elif consumer:
                letters = await self._dead_letters(consumer)
            else:
                letters = []
            counts: dict[str, int] = {}
            for letter in letters:
                if not letter.consumer:
                    continue  # the cycle guard's: never replayed
                # The replay takes the dead letter's copy of the event: the log may not
                # hold it any more (retention).
                await self._kv_replays().put(
                    replay_key(letter.consumer, letter.sequence),
                    encode_replay(0, "", letter.envelope.SerializeToString()),
                )
                self._replays.setdefault(letter.consumer, set()).add(letter.sequence)
                with contextlib.suppress(NotFoundError):
                    await self._jetstream().delete_msg(self.dlq_stream, letter.dead_letter_id)
                counts[letter.consumer] = counts.get(letter.consumer, 0) + 1
            return counts

        counts: dict[str, int] = await self._run(op)
        return counts

    async def read_replays(self, consumer: str, after: int, limit: int) -> list[ReplayRecord]:
        async def op() -> list[ReplayRecord]:
            seqs = sorted(s for s in self._replays.get(consumer, set()) if s > after)[:limit]
            found = await asyncio.gather(*(self._replay(consumer, s) for s in seqs))
            return [r for r in found if r is not None]

        # Queued after the consumer's handed-over progress, so a replay it has finished is
        # gone before this read.
        replays: list[ReplayRecord] = await self._run(op)
        return replays

    async def _replay(self, consumer: str, sequence: int) -> ReplayRecord | None:
        try:
            entry = await self._kv_replays().get(replay_key(consumer, sequence))
        except KeyNotFoundError:
            # Finished meanwhile (the watch had not passed its deletion on yet).
            self._replays.get(consumer, set()).discard(sequence)
            return None
        attempts, last_error, data = decode_replay(entry.value or b"")
        msg = await self._get(self.stream, sequence)
        envelope = _envelope_of(msg) if msg is not None else envelope_from(data)
        return ReplayRecord(sequence, envelope, attempts, last_error)

    async def count_dead_letters(self) -> int:
        await self._settled()
        info = await self._jetstream().stream_info(self.dlq_stream)
        return int(info.state.messages)


async def _connection_error(err: Exception) -> None:
    # One line, not nats-py's traceback per attempt: it keeps trying the servers.
    _log.warning("NATS connection error: %s", err or type(err).__name__)


async def _reconnected() -> None:
    _log.info("NATS connection back")
