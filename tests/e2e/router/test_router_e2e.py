"""The router and modules as real processes: failures the client must never see."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

import grpc
import pytest

from services.kit.rpc.channel import open_channel, wait_for_ready
from soulspot.capabilities.v1 import library_pb2, library_pb2_grpc, search_pb2, search_pb2_grpc
from soulspot.common.v1 import references_pb2
from soulspot.router.v1 import router_pb2, status_pb2_grpc
from tests.helpers.processes import Process, free_port, start_module, start_router

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

pytestmark = pytest.mark.e2e

SEARCH = "/soulspot.capabilities.v1.SearchService/SearchTrack"
SEARCH_SERVICE = "soulspot.capabilities.v1.SearchService"
REQUEST = search_pb2.SearchTrackRequest(query="artist - title")


@pytest.fixture(scope="module")
def router_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    tmp = tmp_path_factory.mktemp("router")
    router = start_router(tmp, free_port())
    asyncio.run(wait_for_ready(router.address, 20, transport=router.client))
    yield router
    router.stop()


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


@pytest.fixture
async def channel(router_process: Process) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(router_process.address, transport=router_process.client) as ch:
        yield ch


async def _until_routed(stub: status_pb2_grpc.StatusServiceAsyncStub, *names: str) -> None:
    """Until the router routes search.track to exactly these modules, in this order."""
    for _ in range(500):
        status = await stub.GetStatus(router_pb2.GetStatusRequest(), timeout=5)
        route = {c.name: c for c in status.capabilities}["search.track"]
        if [p.module for p in route.providers if p.routable] == list(names):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"search.track never routed to {names}")


async def test_kill_9_of_the_top_module_under_load_loses_no_call(
    router_process: Process, modules: list[Process], channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    address = router_process.address
    modules.append(start_module(tmp_path, "k-primary", address, priority=10))
    modules.append(start_module(tmp_path, "k-backup", address, priority=5))
    router = status_pb2_grpc.StatusServiceStub(channel)
    await _until_routed(router, "k-primary", "k-backup")
    search = search_pb2_grpc.SearchServiceStub(channel)
    answers: list[tuple[float, str]] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            try:
                reply = await search.SearchTrack(REQUEST, timeout=3)
                answers.append((time.monotonic(), reply.results[0].source))
            except grpc.aio.AioRpcError as err:
                failures.append(f"{err.code().name}: {err.details()}")

    workers = [asyncio.create_task(load()) for _ in range(8)]
    try:
        await asyncio.sleep(0.5)
        modules[0].kill()
        killed_at = time.monotonic()
        await asyncio.sleep(1.0)
        restarted = start_module(tmp_path, "k-primary", address, priority=10)
        modules.append(restarted)
        ready_at = time.monotonic()
        for _ in range(300):
            if any(t > ready_at and s == "k-primary" for t, s in answers):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert failures == []
    during = [s for t, s in answers if killed_at + 0.2 < t < ready_at]
    assert during
    assert set(during) == {"k-backup"}
    back = [t for t, s in answers if t > ready_at and s == "k-primary"]
    assert back, "calls never returned to the restarted module"
    assert back[0] - ready_at < 2.0


async def test_module_that_never_answers_is_bypassed(
    router_process: Process, modules: list[Process], channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    address = router_process.address
    modules.append(start_module(tmp_path, "h-hang", address, priority=10, behaviour="hang"))
    modules.append(start_module(tmp_path, "h-ok", address, priority=1))
    router = status_pb2_grpc.StatusServiceStub(channel)
    await _until_routed(router, "h-hang", "h-ok")
    search = search_pb2_grpc.SearchServiceStub(channel)
    attempts = []
    for _ in range(5):
        call = search.SearchTrack(REQUEST, timeout=0.6)
        assert (await call).results[0].source == "h-ok"
        trailing = dict(await call.trailing_metadata() or ())
        attempts.append(trailing["x-soulspot-attempts"])
    # The deadline bypasses it at first; after three timeouts its breaker keeps calls away.
    assert attempts[:3] == ["h-hang:DEADLINE_EXCEEDED,h-ok:OK"] * 3
    assert attempts[3:] == ["h-ok:OK"] * 2
    status = await router.GetStatus(router_pb2.GetStatusRequest(), timeout=5)
    hang = {m.name: m for m in status.modules}["h-hang"]
    assert hang.breaker == "open"


async def test_invalid_argument_from_a_module_is_not_retried_elsewhere(
    router_process: Process, modules: list[Process], channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    address = router_process.address
    modules.append(
        start_module(
            tmp_path, "i-strict", address, priority=10, behaviour="fail", code="INVALID_ARGUMENT"
        )
    )
    modules.append(start_module(tmp_path, "i-lenient", address, priority=1))
    router = status_pb2_grpc.StatusServiceStub(channel)
    await _until_routed(router, "i-strict", "i-lenient")
    search = search_pb2_grpc.SearchServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await search.SearchTrack(REQUEST, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailing = dict(caught.value.trailing_metadata() or ())
    assert trailing["x-soulspot-attempts"] == "i-strict:INVALID_ARGUMENT"
    assert trailing["x-soulspot-module"] == "i-strict"


async def test_garbage_bytes_are_invalid_and_the_router_keeps_serving(
    router_process: Process, modules: list[Process], channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    modules.append(start_module(tmp_path, "g-ok", router_process.address, priority=1))
    router = status_pb2_grpc.StatusServiceStub(channel)
    await _until_routed(router, "g-ok")
    raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(SEARCH)
    for garbage in (b"\xff" * 16, b"\x0a\xff\xff\xff\xff\x0f", bytes(range(256))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(garbage, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reply = await search_pb2_grpc.SearchServiceStub(channel).SearchTrack(REQUEST, timeout=5)
    assert reply.results[0].source == "g-ok"
    assert router_process.popen.poll() is None


async def test_no_provider_is_unavailable_and_warned_once(
    router_process: Process, channel: grpc.aio.Channel
) -> None:
    library = library_pb2_grpc.LibraryServiceStub(channel)
    request = library_pb2.ImportTrackRequest(
        track=references_pb2.TrackReference(title="t", artist="a"),
        file=references_pb2.FileReference(path="/x.flac"),
    )
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await library.ImportTrack(request, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "import.track" in (caught.value.details() or "")
    await asyncio.sleep(0.2)  # the log line is written by another process
    warnings = []
    for line in router_process.log_lines():
        entry = json.loads(line)
        if entry.get("logger") == "soulspot.router.warnings":
            warnings.append(entry)
    imports = [w for w in warnings if w["operation"] == "import.track"]
    assert len(imports) == 1
    assert {"module", "operation", "status", "impact", "action"} <= imports[0].keys()
