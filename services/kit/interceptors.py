"""Call context and access logging for servers; context propagation for clients."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from services.kit import context as ctx
from services.kit.errors import MeshError, abort_with, error_for
from services.kit.handlers import wrap_handler

if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterable,
        AsyncIterator,
        Awaitable,
        Callable,
        Iterable,
        Sequence,
    )

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

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


def metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | None:
    """The first value of `key` as text, or None (also for an empty value)."""
    for k, v in metadata or ():
        if k == key:
            text = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            return text or None
    return None


def _with_trailing(context: grpc.aio.ServicerContext[Any, Any], key: str, value: str) -> None:
    """Add key to the trailing metadata unless the handler already set it."""
    existing = tuple(context.trailing_metadata() or ())
    if not any(k == key for k, _ in existing):
        context.set_trailing_metadata((*existing, (key, value)))


class ContextServerInterceptor(grpc.aio.ServerInterceptor):
    """Binds each call's correlation id and traceparent, and logs one line when it ends.

    The correlation id comes from `x-correlation-id` (or is created) and is echoed in the
    trailing metadata; the server span is a child of the caller's `traceparent` (or a new
    trace). A `MeshError` escaping the handler becomes its rich status.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(ACCESS_LOGGER_NAME)

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
        around = functools.partial(self._call_scope, handler_call_details.method)
        return wrap_handler(handler, around)

    @asynccontextmanager
    async def _call_scope(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], _request: object
    ) -> AsyncIterator[None]:
        metadata = context.invocation_metadata()
        correlation_id = (
            metadata_value(metadata, ctx.CORRELATION_ID_KEY) or ctx.new_correlation_id()
        )
        incoming = ctx.parse_traceparent(metadata_value(metadata, ctx.TRACEPARENT_KEY))
        traceparent = incoming.child() if incoming is not None else ctx.new_traceparent()
        # Set before the handler runs, so a plain context.abort() keeps it too.
        context.set_trailing_metadata(((ctx.CORRELATION_ID_KEY, correlation_id),))
        started = time.perf_counter()
        # Read now: asking the context for its peer after the server stopped crashes grpc.
        peer = context.peer()
        code: grpc.StatusCode | None = None
        failure: BaseException | None = None
        with ctx.bind(correlation_id, traceparent):
            try:
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
                code = context.code()
                if code is None or code == grpc.StatusCode.OK:
                    code = grpc.StatusCode.UNKNOWN
                # Answer here, like gRPC would, but without gRPC logging the exception a
                # second time: the access line below carries the traceback.
                details = context.details() or f"Unexpected {type(err).__name__}: {err}"
                await abort_with(context, error_for(code, details))
            finally:
                code = code or context.code() or grpc.StatusCode.OK
                _with_trailing(context, ctx.CORRELATION_ID_KEY, correlation_id)
                self._log_call(method, code, started, peer, correlation_id, traceparent, failure)

    def _log_call(
        self,
        method: str,
        code: grpc.StatusCode,
        started: float,
        peer: str,
        correlation_id: str,
        traceparent: ctx.TraceParent,
        failure: BaseException | None,
    ) -> None:
        if code in _SERVER_FAULT_CODES:
            level = logging.ERROR
        elif code == grpc.StatusCode.OK and method.startswith(QUIET_METHOD_PREFIXES):
            level = logging.DEBUG
        else:
            level = logging.INFO
        if not self._log.isEnabledFor(level):
            return  # the line below would be built only to be dropped
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
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
                "peer": peer,
                "correlation_id": correlation_id,
                "trace_id": traceparent.trace_id,
            },
        )


def with_context_metadata(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    """Call details carrying the current correlation id and a child traceparent.

    Values the caller set explicitly win; the caller's Metadata object is never mutated.
    """
    metadata = grpc.aio.Metadata.from_tuple(tuple(details.metadata or ()))
    # `.keys()`: the stubs type `in metadata` as a test on (key, value) pairs.
    if ctx.CORRELATION_ID_KEY not in metadata.keys():  # noqa: SIM118
        correlation_id = ctx.current_correlation_id()
        if correlation_id is not None:
            metadata.add(ctx.CORRELATION_ID_KEY, correlation_id)
    if ctx.TRACEPARENT_KEY not in metadata.keys():  # noqa: SIM118
        metadata.add(ctx.TRACEPARENT_KEY, str(ctx.child_traceparent()))
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


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
        return await continuation(with_context_metadata(client_call_details), request)


class ContextUnaryStreamInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Req], Awaitable[grpc.aio.UnaryStreamCall[_Req, _Resp]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Req,
    ) -> AsyncIterator[_Resp] | grpc.aio.UnaryStreamCall[_Req, _Resp]:
        return await continuation(with_context_metadata(client_call_details), request)


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
        return await continuation(with_context_metadata(client_call_details), request_iterator)


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
        return await continuation(with_context_metadata(client_call_details), request_iterator)


def client_interceptors() -> Sequence[grpc.aio.ClientInterceptor]:
    """The kit's client interceptors, one per call shape, for `open_channel`."""
    return (
        ContextUnaryUnaryInterceptor(),
        ContextUnaryStreamInterceptor(),
        ContextStreamUnaryInterceptor(),
        ContextStreamStreamInterceptor(),
    )
