"""Publishing and handling events: the module side of the router's event bus.

- `EventPublisher`: what a module publishes through. `RouterPublisher(channel)` publishes to
  the router; `InMemoryBus` records and dispatches in-process, for unit tests.
- `EventHandlers`: `@handlers.on("download.completed")` async handlers `(payload, envelope)`.
- `Subscriber(channel, consumer=..., handlers=...)`: runs the Subscribe stream, acks each
  delivery its handler finished, nacks one that raised, skips an event_id it already
  handled, and reconnects with backoff.

While a handler runs, the event it handles is the current event (a contextvar), so anything
it publishes carries causation_id and the causation chain, and the router can stop loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
import uuid
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import grpc
from google.protobuf import duration_pb2

from services.kit.events.registry import default_registry
from services.kit.observability import metrics as kit_metrics
from services.kit.observability import tracing
from services.kit.rpc import context as ctx
from services.kit.rpc.errors import InvalidArgument, from_rpc_error
from services.kit.rpc.validation import validate_request
from services.kit.support.backoff import Backoff, BackoffPolicy
from services.kit.support.retry import call_with_retry
from soulspot.events.v1 import envelope_pb2
from soulspot.options.v1 import options_pb2
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from google.protobuf.descriptor import Descriptor
    from google.protobuf.message import Message

_log = logging.getLogger(__name__)

HandlerFn = Any  # Callable[[Message, EventEnvelope], Awaitable[None]]

# The event whose handler is running in this task, if any.
current_event: ContextVar[envelope_pb2.EventEnvelope | None] = ContextVar(
    "soulspot_current_event", default=None
)


def event_type_of(payload: Message) -> tuple[str, str]:
    """(event_type, version) from the payload message's `(soulspot.options.v1.event)`."""
    descriptor = cast("Descriptor", payload.DESCRIPTOR)
    options = descriptor.GetOptions()
    if not options.HasExtension(options_pb2.event):
        raise InvalidArgument(f"{descriptor.full_name} is not an event payload (no event option)")
    option = options.Extensions[options_pb2.event]
    return option.event_type, option.version


def build_envelope(
    payload: Message,
    *,
    source_module: str,
    subject: str = "",
    ordering_key: str = "",
    attributes: Mapping[str, str] | None = None,
    cause: envelope_pb2.EventEnvelope | None = None,
) -> envelope_pb2.EventEnvelope:
    """A complete envelope: new id, time, type and version from the payload's option,
    correlation id and traceparent from the call context, causation from `cause` (default:
    the event being handled)."""
    event_type, version = event_type_of(payload)
    cause = cause if cause is not None else current_event.get()
    correlation_id = ctx.current_correlation_id() or (cause.correlation_id if cause else "")
    envelope = envelope_pb2.EventEnvelope(
        event_id=str(uuid.uuid4()),
        event_type=event_type,
        schema_version=version,
        source_module=source_module,
        correlation_id=correlation_id or ctx.new_correlation_id(),
        traceparent=str(ctx.child_traceparent()),
        ordering_key=ordering_key,
        subject=subject,
        attributes=dict(attributes or {}),
    )
    envelope.occurred_at.GetCurrentTime()
    envelope.payload.Pack(payload)
    if cause is not None:
        envelope.causation_id = cause.event_id
        envelope.causation_chain.extend(cause.causation_chain)
        envelope.causation_chain.add(
            event_id=cause.event_id,
            event_type=cause.event_type,
            source_module=cause.source_module,
        )
    return envelope


def unpack_payload(envelope: envelope_pb2.EventEnvelope) -> Message:
    """The payload as its registered message class (known from the generated contracts)."""
    name = envelope.payload.type_url.rsplit("/", 1)[-1]
    # From the registry, not the descriptor pool: the pool knows only the generated modules
    # someone happened to import, the registry imports every event module.
    message_class = default_registry().message_class(name)
    if message_class is None:
        raise InvalidArgument(f"unknown payload type {name!r}")
    message = message_class()
    message.ParseFromString(envelope.payload.value)
    return message


class EventPublisher(Protocol):
    """What a module publishes through.

    `publish` builds a new envelope (a new event_id); `publish_envelope` sends one built
    earlier (`build_envelope`), e.g. kept across a restart: sent again with the same
    event_id, the bus stores it once.
    """

    async def publish(
        self,
        payload: Message,
        *,
        subject: str = "",
        ordering_key: str = "",
        attributes: dict[str, str] | None = None,
    ) -> envelope_pb2.EventEnvelope: ...

    async def publish_envelope(
        self, envelope: envelope_pb2.EventEnvelope
    ) -> envelope_pb2.EventEnvelope: ...


class RouterPublisher:
    """Publishes to the router; answers once the event is durable there.

    Transient failures (router restarting, overloaded) are retried within `deadline_s` with
    the same event_id, so a retry after a lost answer is stored once.
    """

    def __init__(
        self, channel: grpc.aio.Channel, *, source_module: str = "", deadline_s: float = 15.0
    ) -> None:
        self._stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        self.source_module = source_module or "unknown"
        self.deadline_s = deadline_s

    async def publish(
        self,
        payload: Message,
        *,
        subject: str = "",
        ordering_key: str = "",
        attributes: dict[str, str] | None = None,
    ) -> envelope_pb2.EventEnvelope:
        envelope = build_envelope(
            payload,
            source_module=self.source_module,
            subject=subject,
            ordering_key=ordering_key,
            attributes=attributes,
        )
        return await self.publish_envelope(envelope)

    async def publish_envelope(
        self, envelope: envelope_pb2.EventEnvelope
    ) -> envelope_pb2.EventEnvelope:
        request = router_pb2.PublishRequest(event=envelope)

        async def attempt(time_left: float) -> router_pb2.PublishResponse:
            try:
                return await self._stub.Publish(request, timeout=time_left)
            except grpc.aio.AioRpcError as err:
                raise from_rpc_error(err) from err

        answer = await call_with_retry(attempt, deadline_s=self.deadline_s)
        stored = envelope_pb2.EventEnvelope()
        stored.CopyFrom(envelope)
        stored.sequence = answer.sequence
        return stored


# -- handlers --------------------------------------------------------------------------------

_PATTERN_TOKEN = re.compile(r"^[a-z0-9_\-]+$|^\*{1,2}$")


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Event-type pattern: `*` one dotted token, `**` any tokens; a lone `*` matches all."""
    if pattern in ("*", "**"):
        return re.compile(r".*")
    parts = []
    for token in pattern.split("."):
        if not _PATTERN_TOKEN.match(token):
            raise ValueError(f"bad event type pattern {pattern!r}")
        if token == "**":
            parts.append(r"[^.]+(?:\.[^.]+)*")
        elif token == "*":
            parts.append(r"[^.]+")
        else:
            parts.append(re.escape(token))
    return re.compile(r"\.".join(parts))


@dataclass(frozen=True, slots=True)
class _Registration:
    pattern: str
    regex: re.Pattern[str]
    handler: HandlerFn


class _HandledMetrics:
    """events_handled / event_handling_duration children of one MeshMetrics, cached per
    event type and outcome (looked up once, not per handler run)."""

    def __init__(self, metrics: kit_metrics.MeshMetrics) -> None:
        self.metrics = metrics
        self._counts: dict[tuple[str, str], Any] = {}
        self._seconds: dict[str, Any] = {}

    def record(self, event_type: str, outcome: str, seconds: float | None = None) -> None:
        count = self._counts.get((event_type, outcome))
        if count is None:
            count = self._counts[event_type, outcome] = self.metrics.handled.labels(
                event_type, outcome
            )
        count.inc()
        if seconds is not None:
            observe = self._seconds.get(event_type)
            if observe is None:
                observe = self._seconds[event_type] = self.metrics.handle_seconds.labels(event_type)
            observe.observe(seconds)


_handled_cache: _HandledMetrics | None = None


def _handled_metrics(metrics: kit_metrics.MeshMetrics | None) -> _HandledMetrics:
    """The cache for `metrics`, or for the process default (which may be replaced)."""
    global _handled_cache
    chosen = metrics if metrics is not None else kit_metrics.default_metrics()
    if _handled_cache is None or _handled_cache.metrics is not chosen:
        _handled_cache = _HandledMetrics(chosen)
    return _handled_cache


def record_duplicate(event_type: str, metrics: kit_metrics.MeshMetrics | None = None) -> None:
    """An event_id handled before came again: acked without running the handlers."""
    _handled_metrics(metrics).record(event_type, "duplicate")


class EventHandlers:
    """A registry of async handlers by event type (or pattern such as `download.*`).

    Each handler run counts in `metrics` (default: the process's `default_metrics()`) as
    events_handled{outcome="ok"|"error"} with its duration."""

    def __init__(self, metrics: kit_metrics.MeshMetrics | None = None) -> None:
        self._registrations: list[_Registration] = []
        self.metrics = metrics

    def on(self, pattern: str) -> Callable[[HandlerFn], HandlerFn]:
        regex = _pattern_regex(pattern)

        def register(handler: HandlerFn) -> HandlerFn:
            self._registrations.append(_Registration(pattern, regex, handler))
            return handler

        return register

    def add(self, pattern: str, handler: HandlerFn) -> None:
        self.on(pattern)(handler)

    @property
    def event_types(self) -> list[str]:
        """The patterns to subscribe to, in registration order, without repeats."""
        return list(dict.fromkeys(r.pattern for r in self._registrations))

    def handlers_for(self, event_type: str) -> list[HandlerFn]:
        return [r.handler for r in self._registrations if r.regex.fullmatch(event_type)]

    async def dispatch(self, envelope: envelope_pb2.EventEnvelope, *, consumer: str = "") -> int:
        """Run every matching handler with the event as the current event; returns how many
        ran. The first exception propagates (the caller nacks the delivery).

        Each run is inside `tracing.event_span`: the event's correlation id and a child of
        its traceparent are bound (logs and onward events stay in the event's trace)."""
        handlers = self.handlers_for(envelope.event_type)
        if not handlers:
            return 0
        payload = unpack_payload(envelope)
        metrics = _handled_metrics(self.metrics)
        event_type = envelope.event_type
        token = current_event.set(envelope)
        try:
            for handler in handlers:
                started = time.perf_counter()
                outcome = "error"
                try:
                    with tracing.event_span(envelope, consumer=consumer):
                        await handler(payload, envelope)
                    outcome = "ok"
                finally:
                    metrics.record(event_type, outcome, time.perf_counter() - started)
        finally:
            current_event.reset(token)
        return len(handlers)


class RecentIds:
    """The last `size` ids seen: handlers are idempotent by event_id within that window."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)


# -- the subscriber --------------------------------------------------------------------------

_PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


class Subscriber:
    """Runs one Subscribe stream for a durable consumer and dispatches to `handlers`.

    Deliveries are handled concurrently up to `max_in_flight`. A handler that raises nacks
    only its delivery (redelivered after `nack_delay_s`); a handler that runs long keeps its
    delivery alive with InProgress. An event_id handled before is acked without running the
    handlers again. When the stream breaks, it reconnects with jittered backoff; the router
    redelivers whatever was not acked.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        consumer: str,
        handlers: EventHandlers,
        event_types: list[str] | None = None,
        max_in_flight: int = 16,
        start: int = router_pb2.START_POSITION_NEW,
        start_sequence: int = 0,
        ack_timeout_s: float | None = None,
        max_attempts: int = 0,
        nack_delay_s: float = 1.0,
        instance: str = "",
        recent_ids: int = 10_000,
        max_backoff_s: float = 10.0,
        max_batch: int = 64,
        inactive_threshold_s: float | None = None,
    ) -> None:
        self._stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        self.consumer = consumer
        self.handlers = handlers
        self.event_types = event_types or handlers.event_types
        if not self.event_types:
            raise ValueError("Subscriber needs event types (register handlers first)")
        self.max_in_flight = max_in_flight
        self.start_position = start
        self.start_sequence = start_sequence
        self.ack_timeout_s = ack_timeout_s
        self.max_attempts = max_attempts
        self.nack_delay_s = nack_delay_s
        self.instance = instance
        self.max_backoff_s = max_backoff_s
        self.max_batch = max_batch
        # The router removes the consumer once it has had no subscriber this long: for a
        # watcher that names a fresh consumer each run. None keeps it.
        self.inactive_threshold_s = inactive_threshold_s
        self.recent = RecentIds(recent_ids)
        self.connected = asyncio.Event()
        self.handled = 0
        self.failed = 0
        self.acked_sequence = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"subscriber:{self.consumer}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_connected(self, within_s: float = 10.0) -> None:
        async with asyncio.timeout(within_s):
            await self.connected.wait()

    async def run(self) -> None:
        """Subscribe until cancelled, reconnecting after failures."""
        # Equal jitter, uniform(d/2, d): subscribers cut off together do not come back in
        # step, and none retries sooner than half its wait.
        first_s = min(0.1, self.max_backoff_s)
        backoff = Backoff(
            BackoffPolicy(initial_s=first_s, cap_s=self.max_backoff_s, jitter="equal")
        )
        warned = False
        while not self._stopping:
            try:
                await self._session()
                backoff.reset()
            except grpc.aio.AioRpcError as err:
                if err.code() in _PERMANENT:
                    raise from_rpc_error(err) from err
                if not warned:
                    _log.warning(
                        "event subscription %s lost (%s); reconnecting",
                        self.consumer,
                        err.code().name,
                        extra={"consumer": self.consumer, "grpc_code": err.code().name},
                    )
                    warned = True
            finally:
                # A stream that was up before it broke starts the waits over: the router
                # came back once and most likely is back again.
                if self.connected.is_set():
                    backoff.reset()
                self.connected.clear()
            if self._stopping:
                return
            await backoff.wait()

    def _start_request(self) -> router_pb2.SubscribeRequest:
        start = router_pb2.SubscribeStart(
            consumer=self.consumer,
            event_types=self.event_types,
            start=self.start_position,  # type: ignore[arg-type]
            start_sequence=self.start_sequence,
            max_in_flight=self.max_in_flight,
            max_attempts=self.max_attempts,
            instance=self.instance,
            max_batch=self.max_batch,
        )
        if self.ack_timeout_s is not None:
            start.ack_timeout.FromMilliseconds(int(self.ack_timeout_s * 1000))
        if self.inactive_threshold_s is not None:
            start.inactive_threshold.FromMilliseconds(int(self.inactive_threshold_s * 1000))
        return router_pb2.SubscribeRequest(start=start)

    async def _session(self) -> None:
        requests = _RequestStream()
        requests.put(self._start_request())
        call = self._stub.Subscribe(requests)
        acks = _AckSender(requests)
        tasks: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(self.max_in_flight)
        try:
            async for response in call:
                kind = response.WhichOneof("kind")
                if kind == "subscribed":
                    self.acked_sequence = response.subscribed.acked_sequence
                    self.connected.set()
                    continue
                if kind == "delivery":
                    deliveries: Any = [response.delivery]
                elif kind == "batch":
                    deliveries = response.batch.deliveries
                else:
                    continue
                for delivery in deliveries:
                    await slots.acquire()
                    task = asyncio.create_task(self._handle(delivery, acks))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    task.add_done_callback(lambda _t: slots.release())
        finally:
            for task in list(tasks):
                task.cancel()
            call.cancel()
            # grpc.aio's reader of the requests outlives a call that ended under it: ending
            # the stream lets it finish instead of being collected pending.
            requests.close()

    async def _handle(self, delivery: router_pb2.Delivery, acks: _AckSender) -> None:
        envelope = delivery.event
        delivery_id = delivery.delivery_id
        if envelope.event_id in self.recent:
            record_duplicate(envelope.event_type, self.handlers.metrics)
            acks.ack(delivery_id)
            return
        keepalive = asyncio.create_task(self._keep_alive(delivery_id, acks.requests))
        try:
            await self.handlers.dispatch(envelope, consumer=self.consumer)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self.failed += 1
            _log.warning(
                "handler for %s failed (attempt %d): %r",
                envelope.event_type,
                delivery.attempt,
                err,
                exc_info=True,
                extra={
                    "consumer": self.consumer,
                    "event_id": envelope.event_id,
                    "event_type": envelope.event_type,
                    "attempt": delivery.attempt,
                },
            )
            nack = router_pb2.Nack(delivery_id=delivery_id, reason=repr(err)[:500])
            if self.nack_delay_s > 0:
                nack.delay.CopyFrom(_duration(self.nack_delay_s))
            acks.requests.put(router_pb2.SubscribeRequest(nack=nack))
            return
        finally:
            keepalive.cancel()
        self.recent.add(envelope.event_id)
        self.handled += 1
        acks.ack(delivery_id)

    async def _keep_alive(self, delivery_id: int, requests: _RequestStream) -> None:
        """InProgress at a third of the ack timeout while a long handler runs."""
        interval = max(0.05, (self.ack_timeout_s or 30.0) / 3)
        while True:
            await asyncio.sleep(interval)
            requests.put(
                router_pb2.SubscribeRequest(
                    in_progress=router_pb2.InProgress(delivery_id=delivery_id)
                )
            )


class _RequestStream:
    """What one Subscribe stream sends, in order: an async iterator the session ends.

    Not an async generator, and not left waiting: grpc.aio reads the requests in a task of
    its own that nobody cancels when the call ends from the other side (the router going
    away, a Subscribe refused), so a request iterator that only ended with its call would
    leave that task pending and, were it a generator, closed twice when collected ("Task
    was destroyed but it is pending", "aclose(): asynchronous generator is already running";
    grpc/grpc#29518). Every kit channel has interceptors, and grpc.aio feeds `call.write()`
    through a generator of its own there, so writing instead of iterating does not help.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[router_pb2.SubscribeRequest | None] = asyncio.Queue()
        self._closed = False

    def put(self, request: router_pb2.SubscribeRequest) -> None:
        """Send `request` after those before it (dropped once the stream is closed: the
        router redelivers what was not acked on the next stream)."""
        if not self._closed:
            self._queue.put_nowait(request)

    def close(self) -> None:
        """End the iteration once what was put before is read."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    def __aiter__(self) -> _RequestStream:
        return self

    async def __anext__(self) -> router_pb2.SubscribeRequest:
        request = await self._queue.get()
        if request is None:
            self._queue.put_nowait(None)  # ended for good, however often it is asked
            raise StopAsyncIteration
        return request


class _AckSender:
    """Acks of one event-loop turn go out as one message (AckBatch when there are several)."""

    def __init__(self, requests: _RequestStream) -> None:
        self.requests = requests
        self._ids: list[int] = []

    def ack(self, delivery_id: int) -> None:
        if not self._ids:
            asyncio.get_running_loop().call_soon(self._send)
        self._ids.append(delivery_id)

    def _send(self) -> None:
        ids, self._ids = self._ids, []
        if len(ids) == 1:
            request = router_pb2.SubscribeRequest(ack=router_pb2.Ack(delivery_id=ids[0]))
        else:
            request = router_pb2.SubscribeRequest(ack_batch=router_pb2.AckBatch(delivery_ids=ids))
        self.requests.put(request)


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(int(seconds * 1000))
    return d


# -- in memory -------------------------------------------------------------------------------


class InMemoryBus:
    """The publish interface without a router, for module unit tests.

    `publish` validates the payload (event option, required fields) like the router does,
    records the envelope in `.published`, and schedules the registered handlers (it does not
    wait for them: `await bus.drain()` does). Handler failures are kept in `.failures`.
    Like the router, events sharing an ordering_key reach one set of handlers one at a time,
    in publish order (a failed one does not hold the next back: the router would redeliver
    it, then dead-letter it, and then let the next go).
    Like the router, an event_id it already has is stored once (`publish_envelope` of the
    same envelope again answers the stored one and delivers nothing).
    """

    def __init__(self, source_module: str = "test", handlers: EventHandlers | None = None) -> None:
        self.source_module = source_module
        self.published: list[envelope_pb2.EventEnvelope] = []
        self.failures: list[tuple[envelope_pb2.EventEnvelope, BaseException]] = []
        self._handlers: list[EventHandlers] = [handlers] if handlers is not None else []
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = 0
        self._by_id: dict[str, envelope_pb2.EventEnvelope] = {}
        # (handlers, ordering_key) -> the delivery of that key's latest event.
        self._key_tails: dict[tuple[int, str], asyncio.Task[None]] = {}

    def subscribe(self, handlers: EventHandlers) -> None:
        self._handlers.append(handlers)

    async def publish(
        self,
        payload: Message,
        *,
        subject: str = "",
        ordering_key: str = "",
        attributes: dict[str, str] | None = None,
    ) -> envelope_pb2.EventEnvelope:
        validate_request(payload)
        envelope = build_envelope(
            payload,
            source_module=self.source_module,
            subject=subject,
            ordering_key=ordering_key,
            attributes=attributes,
        )
        return self._store(envelope)

    async def publish_envelope(
        self, envelope: envelope_pb2.EventEnvelope
    ) -> envelope_pb2.EventEnvelope:
        known = self._by_id.get(envelope.event_id)
        if known is not None:
            return known
        validate_request(unpack_payload(envelope))
        stored = envelope_pb2.EventEnvelope()
        stored.CopyFrom(envelope)
        return self._store(stored)

    def _store(self, envelope: envelope_pb2.EventEnvelope) -> envelope_pb2.EventEnvelope:
        self._seq += 1
        envelope.sequence = self._seq
        envelope.stored_at.GetCurrentTime()
        self.published.append(envelope)
        self._by_id[envelope.event_id] = envelope
        for handlers in self._handlers:
            if handlers.handlers_for(envelope.event_type):
                key = (id(handlers), envelope.ordering_key)
                after = self._key_tails.get(key) if envelope.ordering_key else None
                task = asyncio.create_task(self._deliver(handlers, envelope, after))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                if envelope.ordering_key:
                    self._key_tails[key] = task
                    task.add_done_callback(functools.partial(self._key_done, key))
        return envelope

    def _key_done(self, key: tuple[int, str], task: asyncio.Task[None]) -> None:
        if self._key_tails.get(key) is task:
            del self._key_tails[key]

    async def _deliver(
        self,
        handlers: EventHandlers,
        envelope: envelope_pb2.EventEnvelope,
        after: asyncio.Task[None] | None = None,
    ) -> None:
        if after is not None:
            await asyncio.wait({after})  # the key's previous event first, however it ended
        # Handlers run outside the publisher's context, as they would behind the router.
        try:
            await handlers.dispatch(envelope)
        except Exception as err:
            self.failures.append((envelope, err))

    async def drain(self, within_s: float = 5.0) -> None:
        """Wait until every handler scheduled so far (and what they published) finished."""
        deadline = time.monotonic() + within_s
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("handlers still running after drain timeout")
            await asyncio.wait(set(self._tasks), timeout=remaining)

    def envelopes(self, event_type: str) -> list[envelope_pb2.EventEnvelope]:
        return [e for e in self.published if e.event_type == event_type]

    def payloads(self, event_type: str) -> list[Any]:
        return [unpack_payload(e) for e in self.envelopes(event_type)]

    def __iter__(self) -> Iterator[envelope_pb2.EventEnvelope]:
        return iter(self.published)

    def clear(self) -> None:
        self.published.clear()
        self.failures.clear()
