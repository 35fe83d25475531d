from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from soulspot.capabilities.v1 import (
    download_pb2,
    download_pb2_grpc,
    playlist_pb2,
    playlist_pb2_grpc,
    search_pb2,
)
from soulspot.common.v1 import module_pb2, references_pb2
from soulspot.router.v1 import router_pb2
from tests.helpers.fake_module import Behaviour
from tests.helpers.router import eventually, md

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from router.app import RouterApp
    from soulspot.capabilities.v1 import search_pb2_grpc
    from soulspot.router.v1 import status_pb2_grpc

REQUEST = search_pb2.SearchTrackRequest(query="q")


async def test_hanging_module_is_bypassed_by_deadline_then_by_the_breaker(
    router: RouterApp,
    module: Callable[..., Awaitable[Any]],
    search: search_pb2_grpc.SearchServiceAsyncStub,
    status_stub: status_pb2_grpc.StatusServiceAsyncStub,
) -> None:
    hung = await module("hung", 10, behaviour=Behaviour(mode="hang"))
    await module("ok", 1)
    attempts = []
    for _ in range(4):
        call = search.SearchTrack(REQUEST, timeout=0.4)
        assert (await call).results[0].source == "ok"
        attempts.append(md(await call.trailing_metadata())["x-soulspot-attempts"])
    # Two timeouts open the breaker (breaker_failures=2): later calls skip the module.
    assert attempts[:2] == ["hung:DEADLINE_EXCEEDED,ok:OK"] * 2
    assert attempts[2:] == ["ok:OK"] * 2
    assert hung.calls == 2
    status = await status_stub.GetStatus(router_pb2.GetStatusRequest())
    info = {m.name: m for m in status.modules}["hung"]
    assert info.status == module_pb2.MODULE_STATUS_DEGRADED
    assert info.breaker == "open"


async def test_breaker_half_opens_after_cool_down_and_closes_on_success(
    module: Callable[..., Awaitable[Any]],
    search: search_pb2_grpc.SearchServiceAsyncStub,
    router: RouterApp,
) -> None:
    flaky = await module("flaky", 10, behaviour=Behaviour(mode="fail", code="UNAVAILABLE"))
    await module("ok", 1)
    for _ in range(2):
        await search.SearchTrack(REQUEST, timeout=5)
    entry = router.registry.get("flaky")
    assert entry is not None
    assert entry.breaker.state.value == "open"
    flaky.behaviour = Behaviour()
    await eventually(lambda: entry.breaker.state.value == "half_open", timeout=2)
    assert (await search.SearchTrack(REQUEST, timeout=5)).results[0].source == "flaky"
    assert entry.breaker.state.value == "closed"


async def test_non_idempotent_call_is_not_repeated_after_a_module_deadline(
    module: Callable[..., Awaitable[Any]], channel: grpc.aio.Channel
) -> None:
    await module("hung", 10, behaviour=Behaviour(mode="hang"))
    other = await module("other", 1)
    stub = download_pb2_grpc.DownloadServiceStub(channel)
    request = download_pb2.DownloadTrackRequest(
        track=references_pb2.TrackReference(title="t", artist="a")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DownloadTrack(request, timeout=0.4)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert other.calls == 0


async def test_streaming_proxy_with_fallback_only_before_the_first_message(
    module: Callable[..., Awaitable[Any]], channel: grpc.aio.Channel
) -> None:
    first = await module("first", 10, behaviour=Behaviour(mode="fail", code="UNAVAILABLE"))
    second = await module("second", 5)
    stub = playlist_pb2_grpc.PlaylistServiceStub(channel)
    request = playlist_pb2.ListPlaylistTracksRequest(playlist_id="p1")
    call = stub.ListPlaylistTracks(request, timeout=5)
    titles = [item.track.title async for item in call]
    assert titles == ["second-0", "second-1", "second-2"]
    assert md(await call.initial_metadata())["x-soulspot-module"] == "second"
    assert md(await call.trailing_metadata())["x-soulspot-attempts"] == (
        "first:UNAVAILABLE,second:OK"
    )
    # A stream that broke after its first message is not restarted elsewhere.
    first.behaviour = Behaviour(fail_after_first=True)
    second.calls = 0
    call = stub.ListPlaylistTracks(request, timeout=5)
    stream = call.__aiter__()
    assert (await stream.__anext__()).track.title == "first-0"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.__anext__()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert second.calls == 0


async def test_no_provider_is_unavailable_naming_the_capability_and_warns_once(
    module: Callable[..., Awaitable[Any]],
    search: search_pb2_grpc.SearchServiceAsyncStub,
    status_stub: status_pb2_grpc.StatusServiceAsyncStub,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="soulspot.router.warnings")
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await search.SearchTrack(REQUEST, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "search.track" in (caught.value.details() or "")
    warned = [r for r in caplog.records if r.name == "soulspot.router.warnings"]
    assert len(warned) == 1
    assert warned[0].__dict__["operation"] == "search.track"
    for key in ("module_name", "operation", "status", "impact", "action"):
        assert warned[0].__dict__[key]
    status = await status_stub.GetStatus(router_pb2.GetStatusRequest())
    assert [w.operation for w in status.warnings] == ["search.track"]

    # A provider that exists but is down is named with its status and reason.
    fake = await module("catalog", 1)
    assert (await search.SearchTrack(REQUEST, timeout=5)).results
    await fake.server.set_status("", False, "maintenance")
    caplog.clear()

    async def failing() -> str:
        try:
            await search.SearchTrack(REQUEST, timeout=5)
        except grpc.aio.AioRpcError as err:
            return err.details() or ""
        return ""

    details = ""
    for _ in range(100):
        details = await failing()
        if details:
            break
    assert "catalog (inactive" in details
    for _ in range(3):
        await failing()
    assert len([r for r in caplog.records if r.name == "soulspot.router.warnings"]) == 1


async def test_warning_is_a_json_line_with_the_structured_fields(
    search: search_pb2_grpc.SearchServiceAsyncStub, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.kit.observability.logging import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging("router", "WARNING")
    try:
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError):
                await search.SearchTrack(REQUEST, timeout=5)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    warnings = [e for e in lines if e.get("logger") == "soulspot.router.warnings"]
    assert len(warnings) == 1
    assert warnings[0]["operation"] == "search.track"
    assert {"module", "operation", "status", "impact", "action"} <= warnings[0].keys()
