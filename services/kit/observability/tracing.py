"""OpenTelemetry spans that agree with the kit's call context.

services.kit.rpc.context is the one source of truth for the current trace: the server
interceptor binds a child of the caller's `traceparent`, event handlers bind the envelope's,
and every log line carries that trace id. This module only mirrors it into OpenTelemetry:
a span started here takes its trace id AND span id from the bound `TraceParent` (through an
id generator that reads them), and its parent from the incoming `traceparent`. So a span, the
log lines written inside it and the `traceparent` sent on onward calls all name the same
trace, with or without an exporter.

Nothing is exported unless `SOULSPOT_OTEL_EXPORTER` says so: `console` prints spans as JSON
to stdout; `otlp` uses opentelemetry-exporter-otlp when installed (the standard
OTEL_EXPORTER_OTLP_* variables configure it). Without an exporter no TracerProvider is set up
and the interceptor costs one contextvar read per call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.kit.rpc import context as ctx
from services.kit.rpc.context import metadata_value
from services.kit.rpc.errors import MeshError
from services.kit.rpc.handler_wrapping import wrap_handler
from services.kit.support.settings import ProcessSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from services.kit.rpc.handler_wrapping import Around
    from soulspot.events.v1 import envelope_pb2

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

EXPORTER_ENV = "SOULSPOT_OTEL_EXPORTER"
TRACER_NAME = "soulspot"

log = logging.getLogger("soulspot.tracing")

# The ids the next span must take: set just around `start_as_current_span`.
_next_ids: ContextVar[ctx.TraceParent | None] = ContextVar("soulspot_next_span", default=None)


class ContextIdGenerator(IdGenerator):
    """Ids from the kit's context when a span mirrors it, random ones otherwise."""

    def generate_span_id(self) -> int:
        forced = _next_ids.get()
        return int(forced.span_id, 16) if forced is not None else int(secrets.token_hex(8), 16)

    def generate_trace_id(self) -> int:
        forced = _next_ids.get()
        return int(forced.trace_id, 16) if forced is not None else int(secrets.token_hex(16), 16)


_provider: TracerProvider | None = None


def configure_tracing(
    service_name: str, exporter: SpanExporter | str | None = None
) -> TracerProvider | None:
    """Set up this process's TracerProvider when an exporter is configured.

    `exporter` is a SpanExporter (tests pass an InMemorySpanExporter), "console", "otlp",
    or None to read SOULSPOT_OTEL_EXPORTER. Returns the provider, or None when tracing is
    off. Calling it again replaces the provider this module uses (not the global one, which
    OpenTelemetry lets a process set only once).
    """
    global _provider
    chosen = exporter if exporter is not None else ProcessSettings().otel_exporter
    span_exporter = _exporter(chosen)
    if span_exporter is None:
        _provider = None
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        id_generator=ContextIdGenerator(),
    )
    # Simple (synchronous) processing: spans are rare (one per call or event) and a batch
    # thread would lose the last spans of a process killed by SIGTERM.
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    if _provider is None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # The first provider also becomes the global one, for libraries that trace.
        trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def _exporter(chosen: SpanExporter | str) -> SpanExporter | None:
    if isinstance(chosen, SpanExporter):
        return chosen
    name = chosen.lower()
    if name in ("", "none", "off"):
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError:
            log.warning(
                "tracing off: opentelemetry-exporter-otlp is not installed",
                extra={
                    "operation": "tracing",
                    "status": "disabled",
                    "impact": "no spans are exported",
                    "action": f"install opentelemetry-exporter-otlp or set {EXPORTER_ENV}=console",
                },
            )
            return None
        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    log.warning(
        "tracing off: unknown exporter %r",
        chosen,
        extra={"operation": "tracing", "status": "disabled", "action": "use console or otlp"},
    )
    return None


def tracing_enabled() -> bool:
    return _provider is not None


def shutdown_tracing() -> None:
    """Flush and drop the provider (at process exit)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
    _provider = None


def _remote_parent(parent: ctx.TraceParent | None) -> Any:
    """An OpenTelemetry context whose current span is the remote `parent` (or empty)."""
    if parent is None:
        return None
    span_context = trace.SpanContext(
        trace_id=int(parent.trace_id, 16),
        span_id=int(parent.span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(parent.flags & 0xFF),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


@contextmanager
def mirrored_span(
    name: str,
    *,
    parent: ctx.TraceParent | None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict[str, str | int] | None = None,
) -> Iterator[trace.Span | None]:
    """A span for the kit's current TraceParent, child of `parent` (the remote caller).

    Yields None when tracing is off. The caller has bound the current TraceParent already.
    """
    provider = _provider
    current = ctx.current_traceparent()
    if provider is None or current is None:
        yield None
        return
    if parent is not None and parent.trace_id != current.trace_id:
        parent = None  # never graft a span onto another trace
    tracer = provider.get_tracer(TRACER_NAME)
    token = _next_ids.set(current)
    try:
        span = tracer.start_span(
            name, context=_remote_parent(parent), kind=kind, attributes=attributes
        )
    finally:
        _next_ids.reset(token)
    with trace.use_span(
        span, end_on_exit=True, record_exception=True, set_status_on_exception=True
    ):
        yield span


def start_client_span(
    method: str, *, sent: ctx.TraceParent, parent: ctx.TraceParent
) -> trace.Span | None:
    """The CLIENT span of an outgoing call made inside traced work (`parent`, the caller's
    current span), with the ids of `sent`, the traceparent the callee receives: the callee's
    server span then hangs under a span that exists. None while tracing is off.

    End it with `end_client_span` once the call is done.
    """
    provider = _provider
    if provider is None or sent.trace_id != parent.trace_id:
        return None
    service, _, name = method.lstrip("/").rpartition("/")
    token = _next_ids.set(sent)
    try:
        return provider.get_tracer(TRACER_NAME).start_span(
            method.lstrip("/"),
            context=_remote_parent(parent),
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
    finally:
        _next_ids.reset(token)


@contextmanager
def client_span(method: str, *, sent: ctx.TraceParent, parent: ctx.TraceParent) -> Iterator[None]:
    """`start_client_span` around a call awaited in the block, ended with its outcome."""
    span = start_client_span(method, sent=sent, parent=parent)
    if span is None:
        yield
        return
    try:
        yield
    except grpc.aio.AioRpcError as err:
        _set_code(span, err.code())
        raise
    except BaseException as err:
        span.record_exception(err)
        _set_code(span, grpc.StatusCode.CANCELLED)
        raise
    else:
        _set_code(span, grpc.StatusCode.OK)
    finally:
        span.end()


# Spans whose calls are finishing: held until ended (the loop keeps only weak task refs).
_ending: set[asyncio.Task[None]] = set()


def end_client_span(span: trace.Span, call: Any) -> None:
    """End `span` with the status of grpc.aio `call` once the call is done."""

    async def end() -> None:
        try:
            _set_code(span, await call.code())
        except Exception:  # a call cancelled before it started has no code to give
            _set_code(span, grpc.StatusCode.CANCELLED)
        span.end()

    def done(_call: Any) -> None:
        task = asyncio.ensure_future(end())
        _ending.add(task)
        task.add_done_callback(_ending.discard)

    call.add_done_callback(done)


@contextmanager
def event_span(
    envelope: envelope_pb2.EventEnvelope, *, consumer: str = ""
) -> Iterator[trace.Span | None]:
    """Bind a child of the envelope's traceparent and its correlation id, and mirror it as a
    CONSUMER span: for code that handles an event outside `EventHandlers.dispatch`, or
    inside it to get a span per event. Logs and onward events inside carry the same trace."""
    incoming = ctx.parse_traceparent(envelope.traceparent)
    current = incoming.child() if incoming is not None else ctx.new_traceparent()
    attributes: dict[str, str | int] = {
        "messaging.system": "soulspot",
        "messaging.operation": "process",
        "messaging.destination.name": envelope.event_type,
        "messaging.message.id": envelope.event_id,
    }
    if consumer:
        attributes["messaging.consumer.group.name"] = consumer
    with (
        ctx.bind(envelope.correlation_id or None, current),
        mirrored_span(
            f"handle {envelope.event_type}",
            parent=incoming,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span,
    ):
        yield span


class TracingServerInterceptor(grpc.aio.ServerInterceptor):
    """One SERVER span per RPC, with the trace and span id the context interceptor bound.

    Must come after `ContextServerInterceptor` (KitServer puts that one first).
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None or _provider is None:
            return handler
        around = functools.partial(self._scope, handler_call_details.method)
        return wrap_handler(handler, around)

    def around(self, method: str) -> Around | None:
        """The span scope for one call of `method`, or None while tracing is off: for a
        wrapper that does this interceptor's work within its own (see KitServer)."""
        if _provider is None:
            return None
        return functools.partial(self._scope, method)

    @asynccontextmanager
    async def _scope(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], _request: object
    ) -> AsyncIterator[None]:
        incoming = ctx.parse_traceparent(
            metadata_value(context.invocation_metadata(), ctx.TRACEPARENT_KEY)
        )
        service, _, name = method.lstrip("/").rpartition("/")
        attributes: dict[str, str | int] = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
        }
        with mirrored_span(
            method.lstrip("/"), parent=incoming, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            try:
                yield
            except MeshError as err:
                _set_code(span, err.code)
                raise
            except grpc.aio.AbortError:
                _set_code(span, context.code())
                raise
            else:
                _set_code(span, context.code())


def _set_code(span: trace.Span | None, code: Any) -> None:
    if span is None:
        return
    if isinstance(code, grpc.StatusCode):
        status = code
    else:
        # context.code() is None while nothing was set, or the raw int given to set_code.
        status = next((s for s in grpc.StatusCode if s.value[0] == code), grpc.StatusCode.OK)
    span.set_attribute("rpc.grpc.status_code", int(status.value[0]))
    if status != grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, status.name))
