"""The event bus: the EventBusService servicer over an `EventStore`.

Publish validates, applies the cycle guard, and answers once the event is durable. Subscribe
streams deliveries of a durable consumer and takes acks on the same stream.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2

from router.bus.consumer import Consumer, Subscription
from router.bus.consumer_ownership import ConsumerOwnership
from router.bus.metrics import BusMetrics, reason_label
from router.bus.patterns import PatternSet, pattern_error
from router.bus.store import ConsumerHost, ConsumerRecord, Parking
from router.bus.tail import TailCache
from router.bus.validate import envelope_violations, setting_name, validate_envelope
from router.security.caller import Callers, source_name
from router.security.quotas import StreamQuota, quota_failure, quota_key
from services.kit.events.registry import EventRegistry, default_registry, event_option
from services.kit.observability.metrics import MeshMetrics, default_metrics
from services.kit.rpc import context as ctx
from services.kit.rpc.errors import (
    FailedPrecondition,
    InvalidArgument,
    MeshError,
    NotFound,
    PermissionDenied,
    Unavailable,
    abort_with,
    bad_request,
)
from services.kit.rpc.validation import required_violations
from services.kit.support.tasks import cancel_and_wait, cancel_within, finish_within
from soulspot.events.v1 import envelope_pb2
from soulspot.router.v1 import event_bus_pb2, event_bus_pb2_grpc, router_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Sequence

    from google.protobuf.descriptor import Descriptor
    from google.protobuf.message import Message

    from router.bus.settings import BusSettings
    from router.bus.store import AppendResult, DeadLetterRecord, EventStore
    from services.kit.security.identity import Identity

_log = logging.getLogger(__name__)
SERVICE_NAME = event_bus_pb2.DESCRIPTOR.services_by_name["EventBusService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000
REPLAY_PAGE = 500


def cycle_parking(envelope: envelope_pb2.EventEnvelope, max_depth: int) -> Parking | None:
    """Why the causation chain must stop here, or None when the event may flow."""
    chain = envelope.causation_chain
    if len(chain) > max_depth:
        return Parking(
            router_pb2.DEAD_LETTER_REASON_DEPTH,
            f"causation chain has {len(chain)} hops; the limit is {max_depth}",
        )
    hops = [(h.event_type, h.source_module) for h in chain]
    hops.append((envelope.event_type, envelope.source_module))
    seen: set[tuple[str, str]] = set()
    for hop in hops:
        if hop in seen:
            path = " -> ".join(f"{t}@{m}" for t, m in hops)
            return Parking(
                router_pb2.DEAD_LETTER_REASON_CYCLE,
                f"causation chain repeats {hop[0]}@{hop[1]}: {path}",
            )
        seen.add(hop)
    return None


def reason_name(reason: int) -> str:
    """DEAD_LETTER_REASON_CYCLE and friends, for messages and logs."""
    value = router_pb2.DeadLetterReason.ValueType(reason)
    return router_pb2.DeadLetterReason.Name(value)


def _glob(pattern: str) -> str:
    """A SQLite GLOB that matches at least what the pattern matches (refined afterwards)."""
    return "*" if pattern in ("*", "**") else pattern.replace("**", "*")


def _page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode()


def _parse_page_token(token: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidArgument(
            "bad page_token", details=[bad_request({"page_token": "not a token from this bus"})]
        ) from err


def _next_response(
    sub: Subscription, max_batch: int
) -> tuple[router_pb2.SubscribeResponse | None, bool]:
    """The next message for a subscriber: one delivery, or a batch of whatever is queued
    (built in place: each event is copied once), and whether the stream ends after it."""
    response = router_pb2.SubscribeResponse()
    if max_batch == 1:
        item = sub.outgoing.popleft()
        if item is None:
            return None, True
        delivery = response.delivery
        delivery.delivery_id, delivery.attempt = item[0], item[1]
        delivery.event.CopyFrom(item[2])
        return response, False
    deliveries = response.batch.deliveries
    outgoing = sub.outgoing
    while outgoing and len(deliveries) < max_batch:
        item = outgoing.popleft()
        if item is None:
            return (response if deliveries else None), True
        delivery = deliveries.add(delivery_id=item[0], attempt=item[1])
        delivery.event.CopyFrom(item[2])
    return response, False


@dataclass(slots=True)
class _Appending:
    """An append on its way to the store: its future, and what counting it needs."""

    bus: EventBus
    future: asyncio.Future[list[AppendResult]]
    parking: list[Parking | None]
    started: float

    async def results(self) -> list[AppendResult]:
        return await self.bus._appended(self)


@dataclass(slots=True)
class _BatchAnswer:
    """A published batch's answer: the results of its invalid events, and the append of its
    valid ones (at `valid`) on its way."""

    batch_id: int
    results: list[router_pb2.PublishResult]
    valid: list[int]
    appending: _Appending | None

    async def response(self) -> router_pb2.PublishStreamResponse:
        results = self.results
        if self.appending is not None:
            try:
                stored = await self.appending.results()
            except MeshError as err:
                for i in self.valid:
                    results[i].error_code = err.code.value[0]
                    results[i].error_message = err.message
            else:
                for i, result in zip(self.valid, stored, strict=True):
                    results[i].sequence = result.sequence
                    results[i].duplicate = result.duplicate
        return router_pb2.PublishStreamResponse(batch_id=self.batch_id, results=results)


class EventBus(event_bus_pb2_grpc.EventBusServiceServicer):
    """The EventBusService RPCs, plus `publish_local` for the router."""

    def __init__(
        self,
        store: EventStore,
        settings: BusSettings,
        *,
        registry: EventRegistry | None = None,
        source_module: str = "router",
        metrics: MeshMetrics | None = None,
    ) -> None:
        self.store = store
        # Resolved at start when not given: the router makes its own instance the process
        # default after building the bus.
        self._mesh_metrics = metrics
        self.metrics = BusMetrics(metrics if metrics is not None else default_metrics())
        self.settings = settings
        self.registry = registry or default_registry()
        self.source_module = source_module
        # Who may publish, own consumers and administer (set by the router); None takes
        # every caller at its word, as a plaintext router does.
        self.callers: Callers | None = None
        # Each in-memory consumer's owner (an identity URI, "" for none yet), as stored.
        self._owners: dict[str, str] = {}
        self.cache = TailCache(settings.tail_cache_size, 0, settings.tail_cache_max_bytes)
        self._consumers: dict[str, Consumer] = {}
        # A store that serves consumers from its own delivery state (JetStream), else None.
        self._host: ConsumerHost | None = store if isinstance(store, ConsumerHost) else None
        # Consumers of the log served by other routers, as last read (JetStream).
        self._elsewhere: list[router_pb2.ConsumerInfo] = []
        # Who brought each consumer into memory (a quota key): consumers per caller are
        # bounded, as are the Subscribe streams each caller holds open.
        self._consumer_owner: dict[str, str] = {}
        self._subscribe_streams = StreamQuota(
            settings.max_subscribe_streams_per_identity,
            setting=setting_name("max_subscribe_streams_per_identity"),
            what="open Subscribe streams",
        )
        self._consumer_lock = asyncio.Lock()
        self._delivery_ids = itertools.count(1)
        self._retention_task: asyncio.Task[None] | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._started = False
        self.published = 0
        self.parked = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        self.cache = TailCache(
            self.settings.tail_cache_size,
            await self.store.last_sequence(),
            self.settings.tail_cache_max_bytes,
        )
        if self._host is None:
            self.store.append_listener = self._on_append
        else:
            # Its consumers pull from the store, not from the tail: no feed of every event
            # into this router's memory (only last_sequence is kept, see _append).
            self._host.on_replays_queued = self._replays_queued
        if isinstance(self.store, ConsumerOwnership):
            self.store.on_consumer_lost = self._consumer_lost
        if self._mesh_metrics is None:
            self.metrics = BusMetrics(default_metrics())
        # Nobody is subscribed yet: consumers that go away when idle are idle from now on
        # (those idle since before a stop go if their time is up).
        await self.store.consumers_idle_from(int(time.time() * 1_000_000))
        await self._expire_idle()
        self._retention_task = asyncio.create_task(self._retention_loop(), name="bus-retention")
        self._metrics_task = asyncio.create_task(self._lag_loop(), name="bus-lag")
        self._started = True

    async def stop(self) -> None:
        """Stop dispatching and close the log, every step within a bound: a router whose
        NATS is out of reach (or a task that lost its cancellation) still stops, and says
        what it left undone. A cancellation of the stop itself is passed on."""
        if not self._started:
            return
        self._started = False
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        # A tiny request timeout still leaves each step time to finish on a quiet server.
        step_s = max(0.5, self.settings.nats_request_timeout_s)
        for task in (self._retention_task, self._metrics_task, *self._background):
            if not await cancel_within(task, step_s):
                _log.warning("stopping the bus: a background task did not end within %gs", step_s)
        closing = [consumer.close() for consumer in self._consumers.values()]
        await self._stop_step(
            "closing the consumers", asyncio.gather(*closing, return_exceptions=True), step_s
        )
        # A JetStream store bounds its own steps (about two requests' worth in all); this
        # bound is for a close that does not end all the same.
        await self._stop_step("closing the event log", self.store.close(), 4 * step_s + 1.0)

    async def _stop_step(self, what: str, step: Awaitable[Any], within_s: float) -> None:
        try:
            if not await finish_within(step, within_s):
                _log.warning("stopping the bus: %s did not finish within %gs", what, within_s)
        except Exception:
            _log.exception("stopping the bus: %s failed", what)

    async def _retention_loop(self) -> None:
        while self._started:
            await asyncio.sleep(self.settings.retention_interval_s)
            try:
                deleted = await self.store.apply_retention(
                    self.settings.retention_max_age_s, self.settings.retention_max_bytes
                )
            except Exception:
                _log.exception("event retention failed")
                continue
            if deleted:
                _log.info("retention removed %d events", deleted, extra={"deleted": deleted})
            await self._expire_idle()

    async def _expire_idle(self) -> None:
        """Remove the consumers that have had no subscriber for longer than they asked for."""
        now = time.time()
        gone = [
            name
            for name, c in self._consumers.items()
            if c.inactive_s > 0
            and not c.attached
            and c.idle_since
            and now - c.idle_since >= c.inactive_s
        ]
        for name in gone:
            # Out of memory first, so no progress of theirs is written after the removal.
            consumer = self._forget(name)
            if consumer is not None:
                consumer.discard()
        try:
            removed, next_due_us = await self.store.expire_consumers(
                int(now * 1_000_000), keep=set(self._consumers), also=gone
            )
        except Exception:
            _log.exception("removing idle consumers failed")
            return
        if next_due_us is not None:
            # The next one to go (also those left idle by a previous run of the router).
            self._expire_at(next_due_us / 1_000_000 - time.time())
        if removed:
            self._elsewhere = [c for c in self._elsewhere if c.name not in removed]
        for name in removed:
            _log.info(
                "consumer %s removed after its inactive threshold",
                name,
                extra={"consumer": name},
            )

    def _idle(self, consumer: Consumer) -> None:
        """`consumer` lost its last subscriber: remember when, and look again once its
        inactive threshold is up."""
        consumer.idle_since = time.time()
        self.store.set_consumer_idle(consumer.name, int(consumer.idle_since * 1_000_000))
        self._expire_at(consumer.inactive_s)

    def _expire_at(self, delay_s: float) -> None:
        """Look for idle consumers to remove in `delay_s` (one timer: the soonest wins)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, delay_s) + 0.05
        timer = self._idle_timer
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._idle_timer = loop.call_at(when, self._expire_soon)

    def _expire_soon(self) -> None:
        self._idle_timer = None
        if not self._started:
            return
        task = asyncio.create_task(self._expire_idle(), name="bus-idle-consumers")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _lag_loop(self) -> None:
        # Lag grows while nothing is acked, so it is sampled, not only updated on acks.
        # Until the bus stops, not only until cancelled: a cancellation can be lost in a
        # NATS request (see cancel_within).
        while self._started:
            for consumer in list(self._consumers.values()):
                consumer.info()  # sets the gauge
            if self._host is not None:
                await self._read_elsewhere(self._host)
            await asyncio.sleep(self.settings.metrics_interval_s)

    async def _read_elsewhere(self, host: ConsumerHost) -> None:
        """The log's last sequence and the consumers other routers serve, for status."""
        try:
            last = await self.store.last_sequence()
            self.cache.last_sequence = max(self.cache.last_sequence, last)
            self._elsewhere = await host.consumer_statuses(skip=set(self._consumers))
        except Exception as err:
            _log.warning("reading the log's consumers failed: %s", err)

    def _replays_queued(self, name: str) -> None:
        consumer = self._consumers.get(name)
        if consumer is not None:
            consumer.replays_queued()

    def _on_append(self, results: list[AppendResult]) -> None:
        self.cache.add(results)
        for consumer in self._consumers.values():
            if consumer.attached:
                consumer.notify()

    # -- publishing ------------------------------------------------------------------------

    def _parking(self, envelope: envelope_pb2.EventEnvelope) -> Parking | None:
        if not envelope.causation_chain:
            return None  # a first event: no chain to be too deep or to repeat a hop
        parking = cycle_parking(envelope, self.settings.max_causation_depth)
        if parking is not None:
            self.parked += 1
            _log.warning(
                "event %s parked: %s",
                envelope.event_id,
                parking.detail,
                extra={
                    "event_id": envelope.event_id,
                    "event_type": envelope.event_type,
                    "source_module": envelope.source_module,
                    "reason": reason_name(parking.reason),
                },
            )
        return parking

    async def _append(self, envelopes: Sequence[envelope_pb2.EventEnvelope]) -> list[AppendResult]:
        return await self._append_soon(envelopes).results()

    def _append_soon(self, envelopes: Sequence[envelope_pb2.EventEnvelope]) -> _Appending:
        """The events' append, begun now (see _Appending)."""
        parking = [self._parking(e) for e in envelopes]
        started = time.perf_counter()
        try:
            future = self.store.append_soon(envelopes, parking)
        except Exception as err:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(err)
        return _Appending(self, future, parking, started)

    async def _appended(self, appending: _Appending) -> list[AppendResult]:
        """The results of an append begun by _append_soon, counted once it is answered."""
        parking, started = appending.parking, appending.started
        try:
            results = await appending.future
        except MeshError:
            raise
        except Exception as err:
            raise Unavailable(f"the event log could not store the event: {err}") from err
        seconds = time.perf_counter() - started
        metrics = self.metrics
        if self._host is not None and results:
            cache = self.cache
            cache.last_sequence = max(cache.last_sequence, max(r.sequence for r in results))
        for result, park in zip(results, parking, strict=True):
            if result.duplicate:
                continue
            self.published += 1
            metrics.published(result.envelope.event_type, seconds)
            if park is not None:
                metrics.dead_lettered(
                    result.envelope.event_type, "", reason_label(reason_name(park.reason))
                )
        return results

    def _caller(self, context: Context) -> Identity | None:
        """The verified caller, None when callers are taken at their word."""
        return None if self.callers is None else self.callers.identify(context)

    def _publish_problem(
        self, caller: Identity | None, envelope: envelope_pb2.EventEnvelope
    ) -> PermissionDenied | None:
        if caller is None or self.callers is None:
            return None
        if self.callers.may_publish(caller, envelope.event_type):
            return None
        return self.callers.publish_denied(caller, envelope.event_type)

    @staticmethod
    def _stamp(caller: Identity | None, envelope: envelope_pb2.EventEnvelope) -> None:
        """The source is who called, whatever the envelope says (the cycle guard and every
        consumer read it)."""
        if caller is not None:
            envelope.source_module = source_name(caller)

    async def _publish(
        self, envelope: envelope_pb2.EventEnvelope, caller: Identity | None = None
    ) -> router_pb2.PublishResponse:
        self._stamp(caller, envelope)
        validate_envelope(
            envelope,
            self.registry,
            max_payload_bytes=self.settings.max_payload_bytes,
            limits=self.settings,
        )
        denied = self._publish_problem(caller, envelope)
        if denied is not None:
            raise denied
        (result,) = await self._append([envelope])
        return router_pb2.PublishResponse(sequence=result.sequence, duplicate=result.duplicate)

    async def publish_local(
        self, payload_or_envelope: Message, *, subject: str = "", causation: Any = None
    ) -> router_pb2.PublishResponse:
        """Publish from inside the router process: a payload gets a router envelope."""
        if isinstance(payload_or_envelope, envelope_pb2.EventEnvelope):
            envelope = payload_or_envelope
        else:
            envelope = self.envelope_for(payload_or_envelope, subject=subject)
            if isinstance(causation, envelope_pb2.EventEnvelope):
                envelope.causation_id = causation.event_id
                envelope.causation_chain.extend(causation.causation_chain)
                envelope.causation_chain.add(
                    event_id=causation.event_id,
                    event_type=causation.event_type,
                    source_module=causation.source_module,
                )
                if not envelope.correlation_id:
                    envelope.correlation_id = causation.correlation_id
        return await self._publish(envelope)

    def envelope_for(self, payload: Message, *, subject: str = "") -> envelope_pb2.EventEnvelope:
        option = event_option(cast("Descriptor", payload.DESCRIPTOR))
        if option is None:
            raise InvalidArgument(f"{payload.DESCRIPTOR.full_name} is not an event payload")
        envelope = envelope_pb2.EventEnvelope(
            event_id=str(uuid.uuid4()),
            event_type=option.event_type,
            schema_version=option.version,
            source_module=self.source_module,
            correlation_id=ctx.current_correlation_id() or "",
            traceparent=str(ctx.child_traceparent()),
            subject=subject,
        )
        envelope.occurred_at.GetCurrentTime()
        envelope.payload.Pack(payload)
        return envelope

    async def Publish(
        self, request: router_pb2.PublishRequest, context: Context
    ) -> router_pb2.PublishResponse:
        try:
            if not request.HasField("event"):
                raise InvalidArgument(
                    "event is required", details=[bad_request({"event": "field event is required"})]
                )
            return await self._publish(request.event, self._caller(context))
        except MeshError as err:
            await abort_with(context, err)

    async def PublishStream(
        self,
        request_iterator: AsyncIterator[router_pb2.PublishStreamRequest],
        context: Context,
    ) -> AsyncIterator[router_pb2.PublishStreamResponse]:
        try:
            caller = self._caller(context)
        except MeshError as err:
            await abort_with(context, err)
        # Batches are validated and handed to the store as they are read (group commit joins
        # them) and answered in order: one reader task per stream, no task per batch.
        answers: asyncio.Queue[_BatchAnswer | None] = asyncio.Queue(maxsize=64)

        async def read() -> None:
            try:
                async for batch in request_iterator:
                    await answers.put(self._publish_batch_soon(batch, caller))
            finally:
                await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                answer = await answers.get()
                if answer is None:
                    break
                yield await answer.response()
            await reader
        finally:
            reader.cancel()

    async def _publish_batch(
        self, batch: router_pb2.PublishStreamRequest, caller: Identity | None = None
    ) -> router_pb2.PublishStreamResponse:
        return await self._publish_batch_soon(batch, caller).response()

    def _publish_batch_soon(
        self, batch: router_pb2.PublishStreamRequest, caller: Identity | None = None
    ) -> _BatchAnswer:
        """The batch validated and its valid events' append begun; the answer follows."""
        results: list[router_pb2.PublishResult] = [
            router_pb2.PublishResult(event_id=e.event_id) for e in batch.events
        ]
        valid: list[tuple[int, envelope_pb2.EventEnvelope]] = []
        for i, env in enumerate(batch.events):
            self._stamp(caller, env)
            violations, payload = envelope_violations(
                env,
                self.registry,
                max_payload_bytes=self.settings.max_payload_bytes,
                prefix=f"events[{i}].",
                limits=self.settings,
            )
            if violations or payload is None:
                results[i].error_code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
                results[i].error_message = "; ".join(
                    f"{v.field}: {v.description}" for v in violations
                )
            elif (denied := self._publish_problem(caller, env)) is not None:
                results[i].error_code = denied.code.value[0]
                results[i].error_message = denied.message
            else:
                valid.append((i, env))
        appending = self._append_soon([e for _, e in valid]) if valid else None
        return _BatchAnswer(batch.batch_id, results, [i for i, _ in valid], appending)

    # -- subscribing -----------------------------------------------------------------------

    def _check_consumer_quota(self, key: str) -> None:
        """A caller may bring at most max_consumers_per_identity consumers into memory."""
        limit = self.settings.max_consumers_per_identity
        owned = sum(1 for owner in self._consumer_owner.values() if owner == key)
        if owned >= limit:
            raise quota_failure(
                key, setting_name("max_consumers_per_identity"), limit, "durable consumers"
            )

    def _check_owner(self, name: str, owner: str, identity: Identity | None) -> None:
        """A consumer belongs to the identity that created it; a plaintext caller (None) is
        taken at its word, and a consumer without an owner goes to its next subscriber."""
        if identity is None or not owner or owner == identity.uri:
            return
        raise PermissionDenied(
            f"consumer {name!r} belongs to {owner}; {identity.uri} may not subscribe to it"
        )

    @staticmethod
    def _check_same_terms(consumer: Consumer, patterns: tuple[str, ...], inactive_s: float) -> None:
        """A subscriber joining others must ask what they asked: applied silently, its
        patterns or inactive threshold would change what the others receive or keep."""
        if not consumer.attached:
            return
        problems: dict[str, str] = {}
        current = consumer.patterns.patterns
        if patterns and patterns != current:
            problems["start.event_types"] = (
                f"consumer {consumer.name!r} has subscribers with event_types "
                f"{list(current)}; this subscriber asks {list(patterns)}"
            )
        if inactive_s != consumer.inactive_s:
            problems["start.inactive_threshold"] = (
                f"consumer {consumer.name!r} has subscribers with inactive_threshold "
                f"{consumer.inactive_s:g}s; this subscriber asks {inactive_s:g}s"
            )
        if problems:
            raise FailedPrecondition(
                "; ".join(problems.values())
                + ": subscribe with the same terms, or change them once no subscriber is left",
                details=[
                    error_details_pb2.PreconditionFailure(
                        violations=[
                            error_details_pb2.PreconditionFailure.Violation(
                                type="CONSUMER_TERMS", subject=field, description=text
                            )
                            for field, text in problems.items()
                        ]
                    )
                ],
            )

    def _claimed(self, name: str, identity: Identity) -> None:
        self._owners[name] = identity.uri
        _log.warning(
            "consumer %s had no owner: it now belongs to %s, its first subscriber since",
            name,
            identity.uri,
            extra={"consumer": name, "owner": identity.uri, "operation": "claim"},
        )

    async def _consumer_for(
        self,
        start: router_pb2.SubscribeStart,
        caller: str = "",
        *,
        identity: Identity | None = None,
    ) -> Consumer:
        owner = identity.uri if identity is not None else ""
        async with self._consumer_lock:
            patterns = tuple(start.event_types)
            consumer = self._consumers.get(start.consumer)
            if consumer is None and caller:
                self._check_consumer_quota(caller)
            max_attempts = start.max_attempts or self.settings.default_max_attempts
            inactive_s = (
                start.inactive_threshold.ToTimedelta().total_seconds()
                if start.HasField("inactive_threshold")
                else 0.0
            )
            if consumer is None:
                await self._claim(start.consumer)
                try:
                    record = await self.store.load_consumer(start.consumer)
                    if record is not None:
                        self._check_owner(start.consumer, record.owner, identity)
                except BaseException:
                    await self._let_go(start.consumer)
                    raise
                if record is None:
                    floor = await self._start_floor(start)
                    record = ConsumerRecord(start.consumer, patterns, floor, owner=owner)
                else:
                    floor = record.floor
                # Patterns and the inactive threshold as this subscriber asks.
                await self.store.save_consumer(
                    start.consumer, patterns, floor, inactive_s=inactive_s, owner=owner
                )
                if record.owner:
                    self._owners[start.consumer] = record.owner
                elif identity is not None:
                    self._claimed(start.consumer, identity)
                record.patterns = patterns
                consumer = await self._open_consumer(record, max_attempts)
                # Queued replays (record.replays) stay in the store; the consumer reads
                # them a page at a time.
                self._consumers[start.consumer] = consumer
                if caller:
                    self._consumer_owner[start.consumer] = caller
            else:
                self._check_owner(start.consumer, self._owners.get(start.consumer, ""), identity)
                self._check_same_terms(consumer, patterns, inactive_s)
                claim = identity is not None and not self._owners.get(start.consumer)
                if (
                    claim
                    or patterns != consumer.patterns.patterns
                    or inactive_s != consumer.inactive_s
                ):
                    await self.store.save_consumer(
                        start.consumer, patterns, consumer.floor, inactive_s=inactive_s, owner=owner
                    )
                if claim and identity is not None:
                    self._claimed(start.consumer, identity)
                if patterns != consumer.patterns.patterns or max_attempts != consumer.max_attempts:
                    await consumer.configure(patterns, max_attempts)
            consumer.max_attempts = max_attempts
            consumer.inactive_s = inactive_s
            if consumer.idle_since or inactive_s > 0:
                consumer.idle_since = 0.0
                self.store.set_consumer_idle(consumer.name, 0)  # it has a subscriber now
            return consumer

    async def _open_consumer(self, record: ConsumerRecord, max_attempts: int) -> Consumer:
        if self._host is None:
            return Consumer(
                record,
                store=self.store,
                cache=self.cache,
                delivery_ids=self._delivery_ids,
                page_size=self.settings.page_size,
                max_attempts=max_attempts,
                metrics=self.metrics,
            )
        try:
            return await self._host.open_consumer(
                record,
                cache=self.cache,
                delivery_ids=self._delivery_ids,
                page_size=self.settings.page_size,
                max_attempts=max_attempts,
                metrics=self.metrics,
            )
        except BaseException as err:
            await self._let_go(record.name)
            if isinstance(err, Exception) and not isinstance(err, MeshError):
                raise Unavailable(f"the event log could not open the consumer: {err}") from err
            raise

    async def _claim(self, name: str) -> None:
        """Serve `name` here, or refuse: with several routers on one JetStream, one router
        at a time serves a consumer (router/bus/jetstream/consumer_lease.py). The refusal is
        UNAVAILABLE, which the kit's subscriber retries, on the next router of its list."""
        if not isinstance(self.store, ConsumerOwnership):
            return
        holder = await self.store.claim_consumer(name)
        if holder is not None:
            raise Unavailable(
                f"consumer {name!r} is served by {holder.describe()}: subscribe there (a "
                f"client given every router's address reaches it on a retry); if that router "
                f"is gone, another takes the consumer over once its lease has not been "
                f"renewed for {self.settings.consumer_lease_s:g}s "
                f"({setting_name('consumer_lease_s')})"
            )

    async def _let_go(self, name: str) -> None:
        """Give up the lease of a consumer this router no longer serves (its state written)."""
        if isinstance(self.store, ConsumerOwnership):
            await self.store.release_consumer(name)

    def _forget(self, name: str) -> Consumer | None:
        """Take the consumer and its owner records out of memory; the consumer, if it was
        there."""
        self._consumer_owner.pop(name, None)
        self._owners.pop(name, None)
        return self._consumers.pop(name, None)

    @staticmethod
    def _cut_off(consumer: Consumer) -> None:
        """End the consumer's subscribers' streams and drop it, writing nothing of theirs
        back (their unacked deliveries would otherwise be recorded)."""
        for sub in consumer.subscriptions:
            sub.in_flight.clear()
            sub.closed = True
            sub.end()
        consumer.discard()

    def _consumer_lost(self, name: str) -> None:
        """Another router took the consumer over: stop serving it, writing nothing; its
        subscribers' streams end, and they subscribe again (on the router that serves it)."""
        consumer = self._forget(name)
        if consumer is not None:
            self._cut_off(consumer)

    async def _release_if_unattached(self, consumer: Consumer) -> None:
        """The consumer's last subscriber here went: write its state and let any router
        serve it next (where the next subscriber lands)."""
        async with self._consumer_lock:
            if consumer.attached or self._consumers.get(consumer.name) is not consumer:
                return
            self._forget(consumer.name)
            await consumer.close()
            if self._host is not None:
                # Still a consumer of the log: status shows it until the next look at them.
                others = [c for c in self._elsewhere if c.name != consumer.name]
                self._elsewhere = [*others, consumer.info()]
            try:
                await self._let_go(consumer.name)
            except Exception:
                _log.exception("giving up consumer %s failed", consumer.name)

    async def _start_floor(self, start: router_pb2.SubscribeStart) -> int:
        if start.start == router_pb2.START_POSITION_EARLIEST:
            return 0
        if start.start == router_pb2.START_POSITION_SEQUENCE:
            return max(0, start.start_sequence - 1)
        if start.start == router_pb2.START_POSITION_TIME:
            micros = start.start_time.ToMicroseconds()
            return max(0, await self.store.first_sequence_at(micros) - 1)
        if self._host is not None:
            return await self.store.last_sequence()  # no tail fed from the log here
        return self.cache.last_sequence

    def _check_start(self, request: router_pb2.SubscribeRequest) -> router_pb2.SubscribeStart:
        if request.WhichOneof("kind") != "start":
            raise InvalidArgument(
                "the first message of Subscribe must be start",
                details=[bad_request({"start": "the first message must be a SubscribeStart"})],
            )
        start = request.start
        violations = {
            "start." + v.field: "start." + v.description.removeprefix("field ")
            for v in required_violations(start)
        }
        for i, pattern in enumerate(start.event_types):
            error = pattern_error(pattern)
            if error:
                violations[f"start.event_types[{i}]"] = error
        if start.start == router_pb2.START_POSITION_SEQUENCE and start.start_sequence == 0:
            violations["start.start_sequence"] = "START_POSITION_SEQUENCE needs start_sequence"
        if start.start == router_pb2.START_POSITION_TIME and not start.HasField("start_time"):
            violations["start.start_time"] = "START_POSITION_TIME needs start_time"
        if start.max_in_flight > self.settings.max_in_flight_cap:
            violations["start.max_in_flight"] = (
                f"at most {self.settings.max_in_flight_cap} deliveries may be in flight "
                f"({setting_name('max_in_flight_cap')})"
            )
        if start.HasField("ack_timeout"):
            asked = start.ack_timeout.ToTimedelta().total_seconds()
            if asked > self.settings.max_ack_timeout_s:
                violations["start.ack_timeout"] = (
                    f"ack_timeout is {asked:g}s; the longest allowed is "
                    f"{self.settings.max_ack_timeout_s:g}s ({setting_name('max_ack_timeout_s')})"
                )
        if violations:
            raise InvalidArgument(
                "bad subscription: " + "; ".join(f"{k}: {v}" for k, v in violations.items()),
                details=[bad_request(violations)],
            )
        return start

    async def Subscribe(
        self, request_iterator: AsyncIterator[router_pb2.SubscribeRequest], context: Context
    ) -> AsyncIterator[router_pb2.SubscribeResponse]:
        try:
            first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            return
        caller = quota_key(context)
        try:
            identity = self._caller(context)
            start = self._check_start(first)
            self._subscribe_streams.acquire(caller)
        except MeshError as err:
            await abort_with(context, err)
        try:
            consumer = await self._consumer_for(start, caller, identity=identity)
        except BaseException as err:
            self._subscribe_streams.release(caller)
            if isinstance(err, MeshError):
                await abort_with(context, err)
            raise
        sub = Subscription(
            instance=start.instance or context.peer(),
            max_in_flight=start.max_in_flight or self.settings.default_max_in_flight,
            max_in_flight_bytes=self.settings.max_in_flight_bytes,
            ack_timeout_s=(
                start.ack_timeout.ToTimedelta().total_seconds()
                if start.HasField("ack_timeout")
                else self.settings.default_ack_timeout_s
            ),
        )
        consumer.attach(sub, tuple(start.event_types))
        reader = asyncio.create_task(self._read_acks(request_iterator, consumer, sub))
        try:
            yield router_pb2.SubscribeResponse(
                subscribed=router_pb2.Subscribed(
                    consumer=consumer.name, acked_sequence=consumer.floor
                )
            )
            max_batch = max(1, start.max_batch)
            while True:
                while not sub.outgoing:
                    sub.signal.clear()
                    await sub.signal.wait()
                response, ended = _next_response(sub, max_batch)
                if response is not None:
                    yield response
                if ended:
                    break
        finally:
            self._subscribe_streams.release(caller)
            try:
                # A cancellation of this stream while it waits is passed on, after the rest.
                await cancel_and_wait(reader)
            finally:
                self._subscription_ended(consumer, sub)

    def _subscription_ended(self, consumer: Consumer, sub: Subscription) -> None:
        """A Subscribe stream's subscription is over: detach it, and let the consumer go
        idle or its lease go once nobody else is attached."""
        if self._started:
            consumer.detach(sub)
            if consumer.inactive_s > 0 and not consumer.attached:
                self._idle(consumer)
            if isinstance(self.store, ConsumerOwnership) and not consumer.attached:
                task = asyncio.create_task(
                    self._release_if_unattached(consumer), name="bus-release-consumer"
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _read_acks(
        self,
        request_iterator: AsyncIterator[router_pb2.SubscribeRequest],
        consumer: Consumer,
        sub: Subscription,
    ) -> None:
        try:
            async for request in request_iterator:
                kind = request.WhichOneof("kind")
                if kind == "ack":
                    consumer.ack(sub, request.ack.delivery_id)
                elif kind == "ack_batch":
                    consumer.ack_many(sub, request.ack_batch.delivery_ids)
                elif kind == "nack":
                    delay = (
                        request.nack.delay.ToTimedelta().total_seconds()
                        if request.nack.HasField("delay")
                        else 0.0
                    )
                    consumer.nack(sub, request.nack.delivery_id, delay, request.nack.reason)
                elif kind == "in_progress":
                    consumer.in_progress(sub, request.in_progress.delivery_id)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass
        finally:
            # The subscriber closed its side: end the stream.
            sub.end()

    # -- queries ---------------------------------------------------------------------------

    def _patterns(self, patterns: Sequence[str], field: str) -> PatternSet:
        violations = {
            f"{field}[{i}]": error
            for i, p in enumerate(patterns)
            if (error := pattern_error(p)) is not None
        }
        if violations:
            raise InvalidArgument("bad event type pattern", details=[bad_request(violations)])
        return PatternSet(list(patterns))

    async def ListEvents(
        self, request: router_pb2.ListEventsRequest, context: Context
    ) -> router_pb2.ListEventsResponse:
        try:
            self._require_admin(context, "ListEvents")
            patterns = self._patterns(request.event_types, "event_types")
            limit = min(request.limit or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
            position = _parse_page_token(request.page_token) if request.page_token else None
            out: list[envelope_pb2.EventEnvelope] = []
            globs = [_glob(p) for p in patterns.patterns]
            if "*" in globs:
                globs = []
            # The GLOB prefilter may over-match ("download.*" vs deeper types): refine and
            # read on until the page is full (in count or in bytes: a page of large events
            # must still fit a client's receive limit) or the log is exhausted.
            max_bytes, size, full = self.settings.max_list_bytes, 0, False
            while len(out) < limit and not full:
                rows = await self.store.list_events(
                    limit=limit,
                    oldest_first=request.oldest_first,
                    before=None if request.oldest_first else position,
                    after=position if request.oldest_first else None,
                    correlation_id=request.correlation_id,
                    type_globs=globs,
                )
                if not rows:
                    position = None
                    break
                for env in rows:
                    if patterns.matches(env.event_type):
                        size += env.ByteSize()
                        if out and size > max_bytes:
                            full = True
                            break
                        out.append(env)
                    position = env.sequence
                    if len(out) == limit:
                        break
                if full:
                    break
                if len(rows) < limit and len(out) < limit:
                    position = None
                    break
            more = len(out) == limit or full
            token = _page_token(position) if position is not None and more else ""
            return router_pb2.ListEventsResponse(events=out, next_page_token=token)
        except MeshError as err:
            await abort_with(context, err)

    async def ReplayEvents(
        self, request: router_pb2.ReplayEventsRequest, context: Context
    ) -> AsyncIterator[router_pb2.ReplayEventsResponse]:
        try:
            self._require_admin(context, "ReplayEvents")
            patterns = self._patterns(request.event_types, "event_types")
            which = request.WhichOneof("from")
            if which == "from_time":
                after = await self.store.first_sequence_at(request.from_time.ToMicroseconds()) - 1
            else:
                after = max(0, request.from_sequence - 1)
        except MeshError as err:
            await abort_with(context, err)
        sent = 0
        limit = request.limit or None
        while True:
            page = await self.store.read_after(after, REPLAY_PAGE, include_parked=True)
            for env in page.events:
                if patterns.matches(env.event_type):
                    yield router_pb2.ReplayEventsResponse(event=env)
                    sent += 1
                    if limit is not None and sent >= limit:
                        return
            if page.scanned_to <= after:
                return
            after = page.scanned_to

    # -- dead letters ----------------------------------------------------------------------

    @staticmethod
    def _dead_letter(record: DeadLetterRecord) -> router_pb2.DeadLetter:
        parked_at = timestamp_pb2.Timestamp()
        parked_at.FromMicroseconds(record.parked_at_us)
        return router_pb2.DeadLetter(
            dead_letter_id=record.dead_letter_id,
            consumer=record.consumer,
            event=record.envelope,
            reason=router_pb2.DeadLetterReason.ValueType(record.reason),
            attempts=record.attempts,
            last_error=record.last_error,
            parked_at=parked_at,
        )

    async def ListDeadLetters(
        self, request: router_pb2.ListDeadLettersRequest, context: Context
    ) -> router_pb2.ListDeadLettersResponse:
        limit = min(request.limit or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
        records = await self.store.list_dead_letters(request.consumer, limit)
        return router_pb2.ListDeadLettersResponse(
            dead_letters=[self._dead_letter(r) for r in records]
        )

    async def GetDeadLetter(
        self, request: router_pb2.GetDeadLetterRequest, context: Context
    ) -> router_pb2.GetDeadLetterResponse:
        try:
            if request.dead_letter_id == 0:
                raise InvalidArgument(
                    "dead_letter_id is required",
                    details=[bad_request({"dead_letter_id": "field dead_letter_id is required"})],
                )
            record = await self.store.get_dead_letter(request.dead_letter_id)
            if record is None:
                raise NotFound(f"no dead letter {request.dead_letter_id}")
            return router_pb2.GetDeadLetterResponse(dead_letter=self._dead_letter(record))
        except MeshError as err:
            await abort_with(context, err)

    async def ReplayDeadLetters(
        self, request: router_pb2.ReplayDeadLettersRequest, context: Context
    ) -> router_pb2.ReplayDeadLettersResponse:
        try:
            self._require_admin(context, "ReplayDeadLetters")
            ids = list(request.dead_letter_ids)
            if not ids and not request.consumer:
                raise InvalidArgument(
                    "name dead letters or a consumer",
                    details=[bad_request({"dead_letter_ids": "give dead_letter_ids or consumer"})],
                )
            for dl_id in ids:
                record = await self.store.get_dead_letter(dl_id)
                if record is None:
                    raise NotFound(f"no dead letter {dl_id}")
                if not record.consumer:
                    raise FailedPrecondition(
                        f"dead letter {dl_id} was stopped by the cycle guard "
                        f"({reason_name(record.reason)}); "
                        "delivering it again would repeat the loop",
                        details=[
                            error_details_pb2.PreconditionFailure(
                                violations=[
                                    error_details_pb2.PreconditionFailure.Violation(
                                        type="CYCLE_GUARD",
                                        subject=str(dl_id),
                                        description=record.last_error,
                                    )
                                ]
                            )
                        ],
                    )
            counts = await self.store.take_dead_letters(ids, request.consumer)
            for name in counts:
                consumer = self._consumers.get(name)
                if consumer is not None:
                    consumer.replays_queued()
            return router_pb2.ReplayDeadLettersResponse(replayed=sum(counts.values()))
        except MeshError as err:
            await abort_with(context, err)

    # -- admin ---------------------------------------------------------------------------

    def _require_admin(self, context: Context, operation: str) -> None:
        if self.callers is not None:
            self.callers.require_admin(self.callers.identify(context), operation)

    async def DeleteConsumer(
        self, request: event_bus_pb2.DeleteConsumerRequest, context: Context
    ) -> event_bus_pb2.DeleteConsumerResponse:
        try:
            self._require_admin(context, "DeleteConsumer")
            if not request.consumer:
                raise InvalidArgument(
                    "consumer is required",
                    details=[bad_request({"consumer": "field consumer is required"})],
                )
            async with self._consumer_lock:
                consumer = self._forget(request.consumer)
                if consumer is not None:
                    # Out of memory first, and nothing of its subscribers' written back: their
                    # unacked deliveries would otherwise be recorded after the removal.
                    self._cut_off(consumer)
                deleted = await self.store.delete_consumer(request.consumer)
                self._elsewhere = [c for c in self._elsewhere if c.name != request.consumer]
            _log.info(
                "consumer %s deleted",
                request.consumer,
                extra={"consumer": request.consumer, "operation": "delete"},
            )
            return event_bus_pb2.DeleteConsumerResponse(deleted=deleted or consumer is not None)
        except MeshError as err:
            await abort_with(context, err)

    # -- status ----------------------------------------------------------------------------

    def consumers_info(self) -> list[router_pb2.ConsumerInfo]:
        """This router's consumers and (JetStream) those other routers serve, as JetStream
        counted them at the last look (every metrics_interval_s)."""
        here = [c.info() for c in self._consumers.values()]
        return here + [c for c in self._elsewhere if c.name not in self._consumers]

    @property
    def consumers(self) -> dict[str, Consumer]:
        return dict(self._consumers)

    @property
    def last_sequence(self) -> int:
        return self.cache.last_sequence
