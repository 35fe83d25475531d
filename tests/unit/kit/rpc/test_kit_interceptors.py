from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from services.kit.observability.logging import setup_logging
from services.kit.rpc.channel import open_channel
from services.kit.rpc.context import (
    CORRELATION_ID_KEY,
    TRACEPARENT_KEY,
    bind,
    metadata_value,
    new_traceparent,
)
from tests.helpers.echo_service import SERVICE, SayRequest, stubs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from services.kit.rpc.server import KitServer


@pytest.fixture
def json_logs() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    setup_logging("kittest", "DEBUG")
    setup_logging("kittest", "INFO")  # twice: still one handler, one line per record
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _access_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "soulspot.access"]


async def test_correlation_id_and_trace_flow_client_to_handler_and_back(
    channel: grpc.aio.Channel,
) -> None:
    parent = new_traceparent()
    with bind("cid-123", parent):
        call = stubs(channel)["Say"](SayRequest(text="hi"))
        reply = await call
    assert reply.correlation_id == "cid-123"
    assert reply.trace_id == parent.trace_id
    assert metadata_value(await call.trailing_metadata(), CORRELATION_ID_KEY) == "cid-123"


async def test_explicit_metadata_wins_over_the_context(channel: grpc.aio.Channel) -> None:
    parent = new_traceparent()
    with bind("from-context"):
        reply = await stubs(channel)["Say"](
            SayRequest(text="hi"),
            metadata=((CORRELATION_ID_KEY, "explicit"), (TRACEPARENT_KEY, str(parent))),
        )
    assert reply.correlation_id == "explicit"
    assert reply.trace_id == parent.trace_id


async def test_server_creates_ids_when_the_caller_sends_none(server: KitServer) -> None:
    async with open_channel(server.address, interceptors=()) as bare:
        call = stubs(bare)["Say"](SayRequest(text="hi"))
        reply = await call
    assert len(reply.correlation_id) == 32
    assert len(reply.trace_id) == 32
    assert metadata_value(await call.trailing_metadata(), CORRELATION_ID_KEY) == (
        reply.correlation_id
    )


async def _one_item(text: str) -> AsyncIterator[Any]:
    yield SayRequest(text=text)


async def test_every_call_shape_is_intercepted(channel: grpc.aio.Channel) -> None:
    calls = stubs(channel)
    with bind("cid-shapes"):
        streamed = [r async for r in calls["Count"](SayRequest(text="n"))]
        collected = await calls["Collect"](_one_item("a"))
        chatted = [r async for r in calls["Chat"](_one_item("b"))]
    assert [r.count for r in streamed] == [0, 1, 2]
    assert collected.text == "a"
    assert [r.text for r in chatted] == ["b"]
    for reply in [*streamed, collected, *chatted]:
        assert reply.correlation_id == "cid-shapes"


@pytest.mark.usefixtures("json_logs")
async def test_one_json_access_line_per_call(
    channel: grpc.aio.Channel, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = stubs(channel)
    capsys.readouterr()
    with bind("cid-log"):
        await calls["Say"](SayRequest(text="hi"))
        _ = [r async for r in calls["Count"](SayRequest(text="n"))]
        await calls["Collect"](_one_item("a"))
        _ = [r async for r in calls["Chat"](_one_item("b"))]
        with pytest.raises(grpc.aio.AioRpcError):
            await calls["Say"](SayRequest(text="x", fail_code=grpc.StatusCode.NOT_FOUND.value[0]))
    lines = _access_lines(capsys.readouterr().err)
    assert [(line["method"], line["grpc_code"]) for line in lines] == [
        (f"/{SERVICE}/Say", "OK"),
        (f"/{SERVICE}/Count", "OK"),
        (f"/{SERVICE}/Collect", "OK"),
        (f"/{SERVICE}/Chat", "OK"),
        (f"/{SERVICE}/Say", "NOT_FOUND"),
    ]
    for line in lines:
        assert line["service"] == "kittest"
        assert line["correlation_id"] == "cid-log"
        assert len(line["trace_id"]) == 32
        assert line["peer"].startswith("ipv4:127.0.0.1:")
        assert isinstance(line["duration_ms"], float)
        assert {"ts", "level", "msg"} <= line.keys()


@pytest.mark.usefixtures("json_logs")
async def test_a_crashing_handler_logs_one_error_line_with_the_traceback(
    channel: grpc.aio.Channel, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs(channel)["Say"](SayRequest(text="crash"))
    assert raised.value.code() == grpc.StatusCode.UNKNOWN
    assert raised.value.details() == "Unexpected RuntimeError: handler bug"
    assert metadata_value(raised.value.trailing_metadata(), CORRELATION_ID_KEY)
    records = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    # One line in all: the access line with the traceback; gRPC itself logs nothing.
    assert [(r["logger"], r["grpc_code"], r["level"]) for r in records] == [
        ("soulspot.access", "UNKNOWN", "ERROR")
    ]
    assert "RuntimeError: handler bug" in records[0]["exc"]
