"""A test service (`kittest.v1.Echo`) built at runtime, for the kit tests and the echo server
process (`tests.helpers.echo_server`). Its descriptors go into the default pool so reflection
serves them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import error_details_pb2

from services.kit.rpc import context, errors

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from services.kit.rpc.server import KitServer

SERVICE = "kittest.v1.Echo"
_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _field(
    msg: Any,
    name: str,
    number: int,
    ftype: int,
    *,
    label: int = _OPTIONAL,
    type_name: str = "",
    required: bool = False,
    oneof_index: int | None = None,
    proto3_optional: bool = False,
) -> None:
    field = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name:
        field.type_name = type_name
    if oneof_index is not None:
        field.oneof_index = oneof_index
    if proto3_optional:
        field.proto3_optional = True
    if required:
        field.options.Extensions[field_behavior_pb2.field_behavior].append(
            field_behavior_pb2.REQUIRED
        )


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="kittest/v1/echo.proto",
        package="kittest.v1",
        syntax="proto3",
        dependency=["google/api/field_behavior.proto"],
    )
    mood = fdp.enum_type.add(name="Mood")
    mood.value.add(name="MOOD_UNSPECIFIED", number=0)
    mood.value.add(name="MOOD_HAPPY", number=1)

    item = fdp.message_type.add(name="Item")
    _field(item, "title", 1, _F.TYPE_STRING, required=True)
    _field(item, "rank", 2, _F.TYPE_INT32)

    say = fdp.message_type.add(name="SayRequest")
    _field(say, "text", 1, _F.TYPE_STRING, required=True)
    _field(say, "item", 2, _F.TYPE_MESSAGE, type_name=".kittest.v1.Item")
    _field(say, "delay_ms", 3, _F.TYPE_UINT32)
    _field(say, "fail_code", 4, _F.TYPE_INT32)  # a grpc status code to fail with

    reply = fdp.message_type.add(name="SayReply")
    _field(reply, "text", 1, _F.TYPE_STRING)
    _field(reply, "correlation_id", 2, _F.TYPE_STRING)
    _field(reply, "trace_id", 3, _F.TYPE_STRING)
    _field(reply, "count", 4, _F.TYPE_INT32)

    strict = fdp.message_type.add(name="Strict")
    _field(strict, "name", 1, _F.TYPE_STRING, required=True)
    _field(strict, "blob", 2, _F.TYPE_BYTES, required=True)
    _field(strict, "item", 3, _F.TYPE_MESSAGE, type_name=".kittest.v1.Item", required=True)
    _field(
        strict,
        "items",
        4,
        _F.TYPE_MESSAGE,
        label=_REPEATED,
        type_name=".kittest.v1.Item",
        required=True,
    )
    _field(strict, "mood", 5, _F.TYPE_ENUM, type_name=".kittest.v1.Mood", required=True)
    _field(strict, "count", 6, _F.TYPE_INT32, required=True)
    _field(strict, "user", 8, _F.TYPE_STRING, required=True, oneof_index=0)
    _field(strict, "group", 9, _F.TYPE_STRING, oneof_index=0)
    _field(
        strict,
        "by_key",
        10,
        _F.TYPE_MESSAGE,
        label=_REPEATED,
        type_name=".kittest.v1.Strict.ByKeyEntry",
    )
    _field(strict, "extra", 11, _F.TYPE_MESSAGE, type_name=".kittest.v1.Item")
    # proto3 `optional`: its synthetic oneof must come after the real ones.
    _field(strict, "limit", 7, _F.TYPE_INT32, required=True, oneof_index=1, proto3_optional=True)
    strict.oneof_decl.add(name="target")
    strict.oneof_decl.add(name="_limit")
    entry = strict.nested_type.add(name="ByKeyEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_MESSAGE, type_name=".kittest.v1.Item")

    service = fdp.service.add(name="Echo")
    for name, client_streaming, server_streaming in (
        ("Say", False, False),
        ("Count", False, True),
        ("Collect", True, False),
        ("Chat", True, True),
    ):
        service.method.add(
            name=name,
            input_type=".kittest.v1.SayRequest",
            output_type=".kittest.v1.SayReply",
            client_streaming=client_streaming,
            server_streaming=server_streaming,
        )
    return fdp


def _load() -> tuple[type[Any], ...]:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("kittest/v1/echo.proto")
    except KeyError:
        pool.AddSerializedFile(_build_file().SerializeToString())
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"kittest.v1.{name}"))
        for name in ("Item", "SayRequest", "SayReply", "Strict")
    )


Item, SayRequest, SayReply, Strict = _load()


def _reply(text: str, count: int = 0) -> Any:
    return SayReply(
        text=text,
        correlation_id=context.current_correlation_id() or "",
        trace_id=context.current_trace_id() or "",
        count=count,
    )


def _code(value: int) -> grpc.StatusCode:
    return next(c for c in grpc.StatusCode if c.value[0] == value)


class Echo:
    """Behaviours in each shape the aio server accepts (coroutine, async generator,
    context.write); `calls` counts unary calls so tests can see retries."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail_first = 0  # fail this many Say calls with UNAVAILABLE before answering

    async def say(self, request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise errors.Unavailable(f"attempt {self.calls} refused")
        if request.text == "crash":
            raise RuntimeError("handler bug")
        if request.delay_ms:
            await asyncio.sleep(request.delay_ms / 1000)
        if request.fail_code:
            raise errors.error_for(
                _code(request.fail_code),
                f"failing with {request.fail_code}",
                details=[
                    errors.bad_request({"text": "is wrong"}),
                    error_details_pb2.ErrorInfo(reason="TEST", domain="kittest"),
                ],
            )
        return _reply(request.text)

    async def count(
        self, request: Any, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        for i in range(3):
            yield _reply(request.text, i)

    async def collect(
        self, requests: AsyncIterator[Any], ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        texts = [r.text async for r in requests]
        return _reply(",".join(texts), len(texts))

    async def chat(
        self, requests: AsyncIterator[Any], ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        async for r in requests:
            await ctx.write(_reply(r.text))

    def add_to(self, server: KitServer) -> None:
        def handler(factory: Any, behaviour: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return factory(  # type: ignore[no-any-return]
                behaviour,
                request_deserializer=SayRequest.FromString,
                response_serializer=SayReply.SerializeToString,
            )

        generic = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Say": handler(grpc.unary_unary_rpc_method_handler, self.say),
                "Count": handler(grpc.unary_stream_rpc_method_handler, self.count),
                "Collect": handler(grpc.stream_unary_rpc_method_handler, self.collect),
                "Chat": handler(grpc.stream_stream_rpc_method_handler, self.chat),
            },
        )
        server.add_service(lambda s: s.add_generic_rpc_handlers([generic]), SERVICE)


def say_stub(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
    return channel.unary_unary(
        f"/{SERVICE}/Say",
        request_serializer=SayRequest.SerializeToString,
        response_deserializer=SayReply.FromString,
    )


def stubs(channel: grpc.aio.Channel) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "request_serializer": SayRequest.SerializeToString,
        "response_deserializer": SayReply.FromString,
    }
    return {
        "Say": channel.unary_unary(f"/{SERVICE}/Say", **kw),
        "Count": channel.unary_stream(f"/{SERVICE}/Count", **kw),
        "Collect": channel.stream_unary(f"/{SERVICE}/Collect", **kw),
        "Chat": channel.stream_stream(f"/{SERVICE}/Chat", **kw),
    }
