"""Run code around every behaviour of a grpc.aio RpcMethodHandler, whatever its shape.

Server interceptors in grpc.aio only see the handler, not the call, so anything that must
happen per call (context, logging, validation) wraps the handler's behaviour. The four
shapes differ: responses come back as a return value, an async generator, or context.write.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    # around(context, request): request is the message for unary-request methods, else None.
    Around = Callable[
        [grpc.aio.ServicerContext[Any, Any], object | None], AbstractAsyncContextManager[None]
    ]

Behaviour = Any


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any], around: Around
) -> grpc.RpcMethodHandler[Any, Any]:
    """A copy of `handler` whose behaviour runs inside `around(context, request)`."""
    deserializer = handler.request_deserializer
    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            _wrap(handler.stream_stream, around, unary_request=False, streaming=True),
            deserializer,
            serializer,
        )
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(
            _wrap(handler.stream_unary, around, unary_request=False, streaming=False),
            deserializer,
            serializer,
        )
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _wrap(handler.unary_stream, around, unary_request=True, streaming=True),
            deserializer,
            serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        _wrap(handler.unary_unary, around, unary_request=True, streaming=False),
        deserializer,
        serializer,
    )


def _wrap(
    behaviour: Behaviour, around: Around, *, unary_request: bool, streaming: bool
) -> Behaviour:
    if inspect.isasyncgenfunction(behaviour):

        async def wrapped_gen(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async with around(context, request if unary_request else None):
                async for response in behaviour(request, context):
                    yield response

        return wrapped_gen

    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async with around(context, request if unary_request else None):
            # Covers coroutine functions and plain functions alike (the generated
            # "unimplemented" stubs are plain): the aio server runs plain ones inline anyway.
            result = behaviour(request, context)
            if inspect.isawaitable(result):
                result = await result
            if streaming and result is not None:
                # A plain generator behaviour: stream what it yields.
                for response in result:
                    await context.write(response)
                return None
            return result

    return wrapped
