from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.kit.rpc.channel import open_channel
from services.kit.rpc.context import CORRELATION_ID_KEY, metadata_value
from services.kit.rpc.errors import InvalidArgument
from services.kit.rpc.server import KitServer
from services.kit.rpc.validation import required_violations, validate_request
from soulspot.common.v1 import references_pb2
from tests.helpers.echo_service import Echo, Item, SayRequest, Strict, say_stub


def _fields(msg: object) -> list[str]:
    return [v.field for v in required_violations(msg)]  # type: ignore[arg-type]


def test_every_kind_of_required_field_is_checked() -> None:
    assert sorted(_fields(Strict())) == sorted(
        ["name", "blob", "item", "items", "mood", "count", "limit", "target"]
    )
    violations = required_violations(Strict())
    assert violations[0].description == "field name is required"


def test_a_complete_message_passes() -> None:
    ok = Strict(
        name="n",
        blob=b"b",
        item=Item(title="t"),
        items=[Item(title="a")],
        mood=1,
        count=3,
        limit=0,  # explicitly set: presence is what counts for proto3 optional
        group="g",  # any member satisfies a required oneof
    )
    assert _fields(ok) == []


def test_zero_values_are_missing() -> None:
    msg = Strict(name="", blob=b"", mood=0, count=0)
    assert {"name", "blob", "mood", "count"} <= set(_fields(msg))


def test_nested_paths_name_the_element() -> None:
    msg = Strict(
        name="n",
        blob=b"b",
        item=Item(),
        items=[Item(title="a"), Item(), Item(title="")],
        mood=1,
        count=1,
        limit=1,
        user="u",
        extra=Item(),  # not required itself, but checked once set
    )
    msg.by_key["k"].rank = 1
    assert sorted(_fields(msg)) == sorted(
        ["item.title", "items[1].title", "items[2].title", "extra.title", "by_key['k'].title"]
    )


def test_generated_contract_message() -> None:
    assert _fields(references_pb2.TrackReference(title="x")) == ["artist"]
    assert _fields(references_pb2.TrackReference(title="x", artist="y")) == []


def test_validate_request_raises_invalid_argument_with_bad_request() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_request(references_pb2.TrackReference())
    bad = raised.value.detail(error_details_pb2.BadRequest)
    assert bad is not None
    assert [v.field for v in bad.field_violations] == ["title", "artist"]
    validate_request(references_pb2.TrackReference(title="x", artist="y"))


async def test_server_rejects_missing_fields_before_the_handler(
    channel: grpc.aio.Channel, echo: Echo
) -> None:
    call = say_stub(channel)(SayRequest(item=Item()))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("text", "field text is required"),
        ("item.title", "field item.title is required"),
    ]
    assert echo.calls == 0


async def test_validation_is_opt_in() -> None:
    echo = Echo()
    kit_server = KitServer("kittest")
    echo.add_to(kit_server)
    async with kit_server, open_channel(kit_server.address) as channel:
        await say_stub(channel)(SayRequest())
    assert echo.calls == 1


class _CountingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.seen.append(details.method)
        return await continuation(details)


async def test_another_interceptor_keeps_validation_and_the_call_context() -> None:
    # A caller's own interceptor needs grpc.aio's interceptor chain: the kit's work then
    # runs as interceptors too, in the same order (context, the caller's, validation).
    echo = Echo()
    counting = _CountingInterceptor()
    kit_server = KitServer("kittest", interceptors=[counting], validate_requests=True)
    echo.add_to(kit_server)
    async with kit_server, open_channel(kit_server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await say_stub(channel)(SayRequest())
        call = say_stub(channel)(SayRequest(text="hi"))
        await call
        trailing = await call.trailing_metadata()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert echo.calls == 1
    assert len(counting.seen) == 2
    assert metadata_value(trailing, CORRELATION_ID_KEY)


def test_the_quick_check_agrees_with_the_walk_on_every_field_left_out() -> None:
    # required_violations walks (and builds paths) only when the quick check finds a gap:
    # the two must agree, or a missing field would pass unnamed.
    from services.kit.rpc.validation import _complete, _walk

    def complete() -> Any:
        return Strict(
            name="n",
            blob=b"b",
            item=Item(title="t"),
            items=[Item(title="a")],
            mood=1,
            count=3,
            limit=0,
            group="g",
        )

    variants: list[Any] = [complete()]
    for field, _value in complete().ListFields():
        msg = complete()
        msg.ClearField(field.name)
        variants.append(msg)
    for setting in ("extra", "by_key", "items", "item"):
        msg = complete()
        if setting == "by_key":
            msg.by_key["k"].CopyFrom(Item())
        elif setting == "items":
            msg.items.add()
        else:
            getattr(msg, setting).Clear()
            getattr(msg, setting).rank = 1  # set, but its required title is empty
        variants.append(msg)
    msg = complete()
    msg.by_key["k"].CopyFrom(Item(title="t"))
    variants.append(msg)
    verdicts = []
    for msg in variants:
        found: list[object] = []
        _walk(msg, "", found)
        assert _complete(msg) == (not found), msg
        verdicts.append(not found)
    assert verdicts.count(True) == 2  # the complete one, and it with a complete map value
