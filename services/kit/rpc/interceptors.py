"""Call context and access logging for servers; context propagation for clients."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from services.kit.observability import tracing
from services.kit.rpc import context as ctx
from services.kit.rpc.context import metadata_value
from services.kit.rpc.errors import MeshError, abort_with, error_for
from services.kit.rpc.handler_wrapping import wrap_handler

if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterable,
        AsyncIterator,
        Awaitable,
        Callable,
        Iterable,
        Sequence,
    )

    from opentelemetry.trace import Span

    from services.kit.observability.metrics import MetricsServerInterceptor
    from services.kit.observability.tracing import TracingServerInterceptor
    from services.kit.rpc.handler_wrapping import Around

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Call = TypeVar("_Call")

ACCESS_LOGGER_NAME = "soulspot.access"

# Probes and tooling would drown the access log; their successful calls log at DEBUG.
QUIET_METHOD_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
# Codes that mean the server misbehaved, as opposed to answering a bad or unlucky request.
_SERVER_FAULT_CODES = frozenset(
    {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
)


def _with_trailing(context: grpc.aio.ServicerContext[Any, Any], key: str, value: str) -> None:
    """Add key to the trailing metadata unless the handler already set it."""
    existing = tuple(context.trailing_metadata() or ())
    if not any(k == key for k, _ in existing):
        context.set_trailing_metadata((*existing, (key, value)))


class _Method:
    """What the per-call path needs to know about one method, worked out once."""

    __slots__ = ("method", "quiet", "record")

    def __init__(self, method: str, record: Callable[[Any, float], None] | None) -> None:
        self.method = method
        self.quiet = method.startswith(QUIET_METHOD_PREFIXES)
        self.record = record


class _Scope:
    """One call's context from its start to its end."""

    __slots__ = ("correlation_id", "peer", "started", "tokens", "traceparent")

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = context.invocation_metadata()
        correlation_id = (
            metadata_value(metadata, ctx.CORRELATION_ID_KEY) or ctx.new_correlation_id()
        )
        incoming = ctx.parse_traceparent(metadata_value(metadata, ctx.TRACEPARENT_KEY))
        traceparent = incoming.child() if incoming is not None else ctx.new_traceparent()
        # Set before the handler runs, so a plain context.abort() keeps it too.
        context.set_trailing_metadata(((ctx.CORRELATION_ID_KEY, correlation_id),))
        self.correlation_id = correlation_id
        self.traceparent = traceparent
        self.started = time.perf_counter()
        # Read now: asking the context for its peer after the server stopped crashes grpc.
        self.peer = context.peer()
        self.tokens = (
            ctx.correlation_id_var.set(correlation_id),
            ctx.traceparent_var.set(traceparent),
        )

    def unbind(self) -> None:
        # An async generator finalized by the event loop exits in another Context, where
        # reset() refuses these tokens; that Context is thrown away, nothing to restore.
        with suppress(ValueError):
            ctx.traceparent_var.reset(self.tokens[1])
            ctx.correlation_id_var.reset(self.tokens[0])


def _failure_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """The status for a handler that raised something other than a status."""
    code = context.code()
    if code is None or code == grpc.StatusCode.OK:
        return grpc.StatusCode.UNKNOWN
    return code


class ContextServerInterceptor(grpc.aio.ServerInterceptor):
    """Binds each call's correlation id and traceparent, and logs one line when it ends.

    The correlation id comes from `x-correlation-id` (or is created) and is echoed in the
    trailing metadata; the server span is a child of the caller's `traceparent` (or a new
    trace). A `MeshError` escaping the handler becomes its rich status.

    Given the metrics and tracing interceptors, it does their work too, in the same wrapper
    (KitServer folds them in): each layer would otherwise cost every call a wrapped handler
    and a context manager of its own.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        metrics: MetricsServerInterceptor | None = None,
        tracing: TracingServerInterceptor | None = None,
    ) -> None:
        self._log = logger or logging.getLogger(ACCESS_LOGGER_NAME)
        self._metrics = metrics
        self._tracing = tracing
        # method -> (handler as found, handler as wrapped): servers hand out the same
        # handler object for a method on every call, so its wrapper is built once.
        self._wrapped: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self.wrap(handler_call_details.method, handler)

    def wrap(
        self,
        method: str,
        handler: grpc.RpcMethodHandler[Any, Any],
        check: Callable[[Any], None] | None = None,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """`handler` with this interceptor's work around every call of it, built once per
        handler object (servers hand out the same one for a method on every call).

        `check(request)` runs first for unary requests, inside the call's scope, so a
        refusal it raises (a MeshError) is answered and logged like any other. KitServer
        wraps handlers this way when they are added, so that grpc.aio runs no interceptors:
        its interceptor path costs every call a coroutine chain of its own.
        """
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler, check)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _span(self, method: str) -> Around | None:
        # Asked per call: tracing may be switched on after the handler was wrapped.
        return self._tracing.around(method) if self._tracing is not None else None

    def _wrap(
        self,
        method: str,
        handler: grpc.RpcMethodHandler[Any, Any],
        check: Callable[[Any], None] | None,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        info = _Method(method, self._metrics.recorder(method) if self._metrics else None)
        if handler.response_streaming:
            around = functools.partial(self._call_scope, info, check)
            return wrap_handler(handler, around)
        # The stubs type behaviours for sync servers; grpc.aio calls them with its context.
        behaviour: Any
        factory: Any
        if handler.request_streaming:
            behaviour = handler.stream_unary
            factory = grpc.stream_unary_rpc_method_handler
            check = None  # streamed requests are the handler's to check
        else:
            behaviour = handler.unary_unary
            factory = grpc.unary_unary_rpc_method_handler
        span_for = self._span

        # The common shape without a context manager: the same steps as _call_scope.
        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            scope = _Scope(context)
            code: grpc.StatusCode | None = None
            failure: BaseException | None = None
            try:
                if check is not None:
                    check(request)
                span = span_for(method)
                if span is None:
                    result = behaviour(request, context)
                    if inspect.isawaitable(result):
                        result = await result
                    return result
                async with span(context, None if handler.request_streaming else request):
                    result = behaviour(request, context)
                    if inspect.isawaitable(result):
                        result = await result
                    return result
            except grpc.aio.AbortError:
                code = context.code()
                raise
            except MeshError as err:
                code = err.code
                await abort_with(context, err)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as err:
                failure = err
                code = _failure_code(context)
                await self._answer_failure(context, code, err)
            finally:
                self._end(info, scope, context, code, failure)

        wrapped: grpc.RpcMethodHandler[Any, Any] = factory(
            observed, handler.request_deserializer, handler.response_serializer
        )
        return wrapped

    @asynccontextmanager
    async def _call_scope(
        self,
        info: _Method,
        check: Callable[[Any], None] | None,
        context: grpc.aio.ServicerContext[Any, Any],
        request: object,
    ) -> AsyncIterator[None]:
        scope = _Scope(context)
        code: grpc.StatusCode | None = None
        failure: BaseException | None = None
        try:
            if check is not None and request is not None:
                check(request)
            span = self._span(info.method)
            if span is None:
                yield
            else:
                async with span(context, request):
                    yield
        except grpc.aio.AbortError:
            code = context.code()
            raise
        except MeshError as err:
            code = err.code
            await abort_with(context, err)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as err:
            failure = err
            code = _failure_code(context)
            await self._answer_failure(context, code, err)
        finally:
            self._end(info, scope, context, code, failure)

    @staticmethod
    async def _answer_failure(
        context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, err: Exception
    ) -> None:
        # Answer here, like gRPC would, but without gRPC logging the exception a second
        # time: the access line carries the traceback.
        details = context.details() or f"Unexpected {type(err).__name__}: {err}"
        await abort_with(context, error_for(code, details))

    def _end(
        self,
        info: _Method,
        scope: _Scope,
        context: grpc.aio.ServicerContext[Any, Any],
        code: grpc.StatusCode | None,
        failure: BaseException | None,
    ) -> None:
        try:
            code = code or context.code() or grpc.StatusCode.OK
            if info.record is not None:
                info.record(code, time.perf_counter() - scope.started)
            _with_trailing(context, ctx.CORRELATION_ID_KEY, scope.correlation_id)
            self._log_call(info, code, scope, failure)
        finally:
            scope.unbind()

    def _log_call(
        self,
        info: _Method,
        code: grpc.StatusCode,
        scope: _Scope,
        failure: BaseException | None,
    ) -> None:
        if code in _SERVER_FAULT_CODES:
            level = logging.ERROR
        elif code == grpc.StatusCode.OK and info.quiet:
            level = logging.DEBUG
        else:
            level = logging.INFO
        if not self._log.isEnabledFor(level):
            return  # the line below would be built only to be dropped
        duration_ms = round((time.perf_counter() - scope.started) * 1000, 3)
        method = info.method
        self._log.log(
            level,
            "%s %s %.1fms",
            method,
            code.name,
            duration_ms,
            # The failure rides on the access line: one line per call, even when it crashed.
            exc_info=(type(failure), failure, failure.__traceback__) if failure else None,
            extra={
                "method": method,
                "grpc_code": code.name,
                "duration_ms": duration_ms,
                "peer": scope.peer,
                "correlation_id": scope.correlation_id,
                "trace_id": scope.traceparent.trace_id,
            },
        )


def with_context_metadata(
    details: grpc.aio.ClientCallDetails,
) -> tuple[grpc.aio.ClientCallDetails, Span | None]:
    """Call details carrying the current correlation id and a child traceparent, and the
    CLIENT span that child stands for when the call is made inside traced work (None
    otherwise, and while tracing is off).

    Values the caller set explicitly win; the caller's Metadata object is never mutated.
    """
    metadata = grpc.aio.Metadata.from_tuple(tuple(details.metadata or ()))
    span = None
    # `.keys()`: the stubs type `in metadata` as a test on (key, value) pairs.
    if ctx.CORRELATION_ID_KEY not in metadata.keys():  # noqa: SIM118
        correlation_id = ctx.current_correlation_id()
        if correlation_id is not None:
            metadata.add(ctx.CORRELATION_ID_KEY, correlation_id)
    if ctx.TRACEPARENT_KEY not in metadata.keys():  # noqa: SIM118
        parent = ctx.current_traceparent()
        sent = parent.child() if parent is not None else ctx.new_traceparent()
        metadata.add(ctx.TRACEPARENT_KEY, str(sent))
        if parent is not None:
            method = details.method
            name = method.decode() if isinstance(method, bytes) else method
            span = tracing.start_client_span(name, sent=sent, parent=parent)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    ), span


async def _traced(
    continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[_Call]],
    details: grpc.aio.ClientCallDetails,
    request: Any,
) -> _Call:
    """Start the call with the context metadata; its CLIENT span ends when the call does."""
    details, span = with_context_metadata(details)
    if span is None:
        return await continuation(details, request)
    try:
        call = await continuation(details, request)
    except BaseException:
        span.end()
        raise
    tracing.end_client_span(span, call)
    return call


# grpc.aio sorts a channel's interceptors by type with an if/elif chain, so one object
# implementing all four interfaces would only intercept unary-unary calls: four classes.


class ContextUnaryUnaryInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Req], Awaitable[grpc.aio.UnaryUnaryCall[_Req, _Resp]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Req,
    ) -> _Resp | grpc.aio.UnaryUnaryCall[_Req, _Resp]:
        return await _traced(continuation, client_call_details, request)


class ContextUnaryStreamInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Req], Awaitable[grpc.aio.UnaryStreamCall[_Req, _Resp]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Req,
    ) -> AsyncIterator[_Resp] | grpc.aio.UnaryStreamCall[_Req, _Resp]:
        return await _traced(continuation, client_call_details, request)


class ContextStreamUnaryInterceptor(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, AsyncIterable[_Req] | Iterable[_Req]],
            Awaitable[grpc.aio.StreamUnaryCall[_Req, _Resp]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[_Req] | Iterable[_Req],
    ) -> _Resp | grpc.aio.StreamUnaryCall[_Req, _Resp]:
        return await _traced(continuation, client_call_details, request_iterator)


class ContextStreamStreamInterceptor(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, AsyncIterable[_Req] | Iterable[_Req]],
            Awaitable[grpc.aio.StreamStreamCall[_Req, _Resp]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[_Req] | Iterable[_Req],
    ) -> AsyncIterator[_Resp] | grpc.aio.StreamStreamCall[_Req, _Resp]:
        return await _traced(continuation, client_call_details, request_iterator)


def client_interceptors() -> Sequence[grpc.aio.ClientInterceptor]:
    """The kit's client interceptors, one per call shape, for `open_channel`."""
    return (
        ContextUnaryUnaryInterceptor(),
        ContextUnaryStreamInterceptor(),
        ContextStreamUnaryInterceptor(),
        ContextStreamStreamInterceptor(),
    )
