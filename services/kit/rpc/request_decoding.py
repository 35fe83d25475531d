"""Requests that do not decode are answered INVALID_ARGUMENT, saying so, instead of UNKNOWN.

grpc.aio decodes a request before the handler runs and answers a decoding failure UNKNOWN
("Unexpected DecodeError"), which reads like a server fault. A handler passed through
`decode_checked` decodes tolerantly instead: a unary request that does not decode reaches the
behaviour as a marker and is refused there, inside the kit's call scope (so it is logged and
counted like any refusal); a streamed request that does not decode raises `InvalidArgument`
where the handler reads it.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from services.kit.rpc.errors import InvalidArgument

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


class _Undecodable:
    """Stands in for a unary request whose bytes did not decode."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _refusal(method: str, reason: str) -> InvalidArgument:
    return InvalidArgument(f"the request to {method} is not a valid message: {reason}")


def decode_checked(
    method: str, handler: grpc.RpcMethodHandler[Any, Any]
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with tolerant request decoding; handlers without a deserializer (raw bytes,
    like the router's capability proxy) come back as they are."""
    decode: Callable[[bytes], Any] | None = handler.request_deserializer
    if decode is None:
        return handler
    serializer = handler.response_serializer
    # The stubs type behaviours for sync servers; grpc.aio calls them with its context.
    behaviours: Any = handler
    if handler.request_streaming:

        def decode_streamed(data: bytes) -> Any:
            try:
                return decode(data)
            except DecodeError as err:
                raise _refusal(method, str(err)) from err

        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                behaviours.stream_stream, decode_streamed, serializer
            )
        return grpc.stream_unary_rpc_method_handler(
            behaviours.stream_unary, decode_streamed, serializer
        )

    def decode_unary(data: bytes) -> Any:
        try:
            return decode(data)
        except DecodeError as err:
            return _Undecodable(str(err))

    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _checked_stream(method, behaviours.unary_stream), decode_unary, serializer
        )
    return grpc.unary_unary_rpc_method_handler(
        _checked_unary(method, behaviours.unary_unary), decode_unary, serializer
    )


def _checked_unary(method: str, behaviour: Any) -> Any:
    # A plain function returning the behaviour's own awaitable: no extra coroutine per call.
    def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if type(request) is _Undecodable:
            raise _refusal(method, request.reason)
        return behaviour(request, context)

    return checked


def _checked_stream(method: str, behaviour: Any) -> Any:
    if not inspect.isasyncgenfunction(behaviour):
        return _checked_unary(method, behaviour)

    # Kept an async generator function: the kit tells streaming behaviours apart that way.
    async def checked(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        if type(request) is _Undecodable:
            raise _refusal(method, request.reason)
        async for response in behaviour(request, context):
            yield response

    return checked
