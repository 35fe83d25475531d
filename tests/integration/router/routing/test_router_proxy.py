from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2

from services.kit.rpc.errors import from_rpc_error
from soulspot.capabilities.v1 import search_pb2
from tests.helpers.fake_module import Behaviour
from tests.helpers.router import SEARCH, eventually, md

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from router.app import RouterApp
    from soulspot.capabilities.v1 import search_pb2_grpc

REQUEST = search_pb2.SearchTrackRequest(query="artist - title")


async def test_call_goes_to_the_highest_priority_module(
    module: Callable[..., Awaitable[Any]], search: search_pb2_grpc.SearchServiceAsyncStub
) -> None:
    await module("low", 1)
    await module("high", 10)
    call = search.SearchTrack(REQUEST, timeout=5)
    response = await call
    assert response.results[0].source == "high"
    trailing = md(await call.trailing_metadata())
    assert trailing["x-soulspot-module"] == "high"
    assert trailing["x-soulspot-attempts"] == "high:OK"


async def test_transient_failure_falls_back_with_attempts_in_metadata(
    module: Callable[..., Awaitable[Any]], search: search_pb2_grpc.SearchServiceAsyncStub
) -> None:
    await module("first", 10, behaviour=Behaviour(mode="fail", code="UNAVAILABLE"))
    second = await module("second", 5)
    call = search.SearchTrack(REQUEST, timeout=5)
    response = await call
    assert response.results[0].source == "second"
    trailing = md(await call.trailing_metadata())
    assert trailing["x-soulspot-module"] == "second"
    assert trailing["x-soulspot-attempts"] == "first:UNAVAILABLE,second:OK"
    assert second.calls == 1


@pytest.mark.parametrize("code", ["RESOURCE_EXHAUSTED", "UNIMPLEMENTED"])
async def test_other_transient_codes_fall_back(
    module: Callable[..., Awaitable[Any]], search: search_pb2_grpc.SearchServiceAsyncStub, code: str
) -> None:
    await module("first", 10, behaviour=Behaviour(mode="fail", code=code))
    await module("second", 5)
    response = await search.SearchTrack(REQUEST, timeout=5)
    assert response.results[0].source == "second"


async def test_logical_error_comes_back_unchanged_and_is_not_retried(
    module: Callable[..., Awaitable[Any]], search: search_pb2_grpc.SearchServiceAsyncStub
) -> None:
    await module(
        "first", 10, behaviour=Behaviour(mode="fail", code="INVALID_ARGUMENT", message="bad query")
    )
    second = await module("second", 5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await search.SearchTrack(REQUEST, timeout=5)
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "bad query"
    detail = from_rpc_error(err).detail(error_details_pb2.BadRequest)
    assert detail is not None
    assert detail.field_violations[0].field == "query"
    trailing = md(err.trailing_metadata())
    assert trailing["x-soulspot-module"] == "first"
    assert trailing["x-soulspot-attempts"] == "first:INVALID_ARGUMENT"
    assert second.calls == 0


async def test_no_fallback_flag_returns_the_first_failure(
    module: Callable[..., Awaitable[Any]], search: search_pb2_grpc.SearchServiceAsyncStub
) -> None:
    await module("first", 10, behaviour=Behaviour(mode="fail", code="UNAVAILABLE"))
    second = await module("second", 5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await search.SearchTrack(REQUEST, timeout=5, metadata=(("x-soulspot-no-fallback", "1"),))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert second.calls == 0


async def test_target_module_is_called_alone_or_refused_clearly(
    module: Callable[..., Awaitable[Any]], search: search_pb2_grpc.SearchServiceAsyncStub
) -> None:
    await module("first", 10)
    await module("second", 5)
    await module("nosearch", 1, capabilities=("download.track",))
    target = (("x-soulspot-target-module", "second"),)
    response = await search.SearchTrack(REQUEST, timeout=5, metadata=target)
    assert response.results[0].source == "second"
    cases = {"ghost": grpc.StatusCode.NOT_FOUND, "nosearch": grpc.StatusCode.UNIMPLEMENTED}
    for name, code in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await search.SearchTrack(
                REQUEST, timeout=5, metadata=(("x-soulspot-target-module", name),)
            )
        assert caught.value.code() == code
        assert name in (caught.value.details() or "")


async def test_target_module_that_is_not_healthy_is_unavailable(
    router: RouterApp,
    module: Callable[..., Awaitable[Any]],
    search: search_pb2_grpc.SearchServiceAsyncStub,
) -> None:
    first = await module("first", 10)
    await module("second", 5)
    await first.server.set_status("", False, "disk full")
    entry = router.registry.get("first")
    assert entry is not None
    await eventually(lambda: not entry.healthy)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await search.SearchTrack(
            REQUEST, timeout=5, metadata=(("x-soulspot-target-module", "first"),)
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "first" in (caught.value.details() or "")


async def test_equal_priorities_share_the_calls(
    module: Callable[..., Awaitable[Any]], search: search_pb2_grpc.SearchServiceAsyncStub
) -> None:
    a = await module("a", 5)
    b = await module("b", 5)
    for _ in range(10):
        await search.SearchTrack(REQUEST, timeout=5)
    assert a.calls == 5
    assert b.calls == 5


async def test_context_propagates_with_a_child_span(
    module: Callable[..., Awaitable[Any]], search: search_pb2_grpc.SearchServiceAsyncStub
) -> None:
    fake = await module("only", 1)
    parent = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"
    call = search.SearchTrack(
        REQUEST,
        timeout=5,
        metadata=(("x-correlation-id", "corr-42"), ("traceparent", parent)),
    )
    await call
    seen = fake.last_metadata
    assert seen["x-correlation-id"] == "corr-42"
    trace_id = seen["traceparent"].split("-")[1]
    assert trace_id == "0123456789abcdef0123456789abcdef"
    assert seen["traceparent"] != parent
    assert "x-soulspot-target-module" not in seen
    assert md(await call.trailing_metadata())["x-correlation-id"] == "corr-42"


async def test_caller_deadline_reaches_the_module(
    module: Callable[..., Awaitable[Any]], search: search_pb2_grpc.SearchServiceAsyncStub
) -> None:
    await module("slow", 1, behaviour=Behaviour(mode="hang"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await search.SearchTrack(REQUEST, timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_garbage_bytes_and_missing_fields_are_invalid_and_router_keeps_serving(
    module: Callable[..., Awaitable[Any]],
    channel: grpc.aio.Channel,
    search: search_pb2_grpc.SearchServiceAsyncStub,
) -> None:
    fake = await module("only", 1)
    raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(SEARCH)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(b"\xff\xff\xff\xff", timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert from_rpc_error(caught.value).detail(error_details_pb2.BadRequest) is not None
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await search.SearchTrack(search_pb2.SearchTrackRequest(limit=3), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = from_rpc_error(caught.value).detail(error_details_pb2.BadRequest)
    assert bad is not None
    assert [v.field for v in bad.field_violations] == ["query"]
    assert fake.calls == 0
    response = await search.SearchTrack(REQUEST, timeout=5)
    assert response.results[0].source == "only"


async def test_router_forwards_the_original_bytes(
    module: Callable[..., Awaitable[Any]], channel: grpc.aio.Channel
) -> None:
    await module("only", 1)
    raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(SEARCH)
    answer = await raw(REQUEST.SerializeToString(), timeout=5)
    parsed = search_pb2.SearchTrackResponse.FromString(answer)
    assert parsed.results[0].track.title == REQUEST.query
