"""Proxyless xDS clients against a real router and real module processes over mutual TLS:
calls go straight to modules, fail over with no client-visible failure when the serving
module is killed, come back to it, and keep going while the router itself is away."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from services.kit.rpc.channel import open_channel, wait_for_ready
from soulspot.router.v1 import router_pb2, status_pb2_grpc
from tests.helpers.processes import Process, free_port, start_module, start_router
from tests.helpers.xds_clients import XdsLoad, bootstrap, xds_calls

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.e2e


@pytest.fixture
def xds_processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()


async def _until_routed(router: Process, *names: str) -> None:
    """Until the router routes search.track to exactly these modules, in this order."""
    async with open_channel(router.address, transport=router.client) as channel:
        stub = status_pb2_grpc.StatusServiceStub(channel)
        for _ in range(1000):
            try:
                status = await stub.GetStatus(router_pb2.GetStatusRequest(), timeout=5)
            except Exception:
                await asyncio.sleep(0.05)
                continue
            route = {c.name: c for c in status.capabilities}["search.track"]
            if [p.module for p in route.providers if p.routable] == list(names):
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"search.track never routed to {names}")


async def _mesh(tmp: Path, processes: list[Process], port: int, **env: str) -> Process:
    router = start_router(tmp, port, SOULSPOT_ROUTER__XDS__WARMUP_S="0", **env)
    processes.append(router)
    await wait_for_ready(router.address, 20, transport=router.client)
    processes.append(start_module(tmp, "k-primary", router.address, priority=10))
    processes.append(start_module(tmp, "k-backup", router.address, priority=5))
    await _until_routed(router, "k-primary", "k-backup")
    return router


async def test_a_tls_client_calls_the_top_module_directly(
    tmp_path: Path, xds_processes: list[Process]
) -> None:
    router = await _mesh(tmp_path, xds_processes, free_port())
    assert router.pki_dir is not None
    result = await xds_calls(
        bootstrap(router.address, router.pki_dir), "--calls=10", pki_dir=router.pki_dir
    )
    assert result["ok"] == 10, result
    assert result["by"] == {"k-primary": 10}


@pytest.mark.parametrize("concurrency", [1, 16])
async def test_kill_9_of_the_serving_module_under_load_fails_no_call_and_it_takes_back(
    tmp_path: Path, xds_processes: list[Process], concurrency: int
) -> None:
    router = await _mesh(tmp_path, xds_processes, free_port())
    load = await XdsLoad(
        bootstrap(router.address, router.pki_dir),
        concurrency,
        "--timeout=5",
        pki_dir=router.pki_dir,
    ).start()
    try:
        await load.wait_for(lambda s: s.served_by("k-primary") >= 50)
        xds_processes[1].kill()
        await load.wait_for(lambda s: s.served_by("k-backup") >= 50)
        restarted = start_module(tmp_path, "k-primary", router.address, priority=10)
        xds_processes.append(restarted)
        before = load.served_by("k-primary")
        await load.wait_for(lambda s: s.served_by("k-primary") >= before + 50)
        totals = await load.stop()
    finally:
        await load.close()
    assert totals["failed"] == {}, totals


async def test_the_router_killed_clients_keep_calling_and_pick_up_changes_when_it_is_back(
    tmp_path: Path, xds_processes: list[Process]
) -> None:
    port = free_port()
    router = await _mesh(tmp_path, xds_processes, port)
    pki_dir = router.pki_dir
    load = await XdsLoad(
        bootstrap(router.address, pki_dir), 4, "--timeout=5", pki_dir=pki_dir
    ).start()
    try:
        await load.wait_for(lambda s: s.served_by("k-primary") >= 20)
        router.kill()
        # The last configuration keeps working with the control plane gone.
        before = load.served_by("k-primary")
        await load.wait_for(lambda s: s.served_by("k-primary") >= before + 200)
        assert load.failures == 0, load.latest
        # Back on the same port, with the default warm-up: the modules register again before
        # any client is answered.
        again = start_router(tmp_path, port)
        xds_processes.append(again)
        await wait_for_ready(again.address, 20, transport=again.client)
        xds_processes.append(start_module(tmp_path, "t-fake", again.address, priority=20))
        await load.wait_for(lambda s: s.served_by("t-fake") >= 20, timeout=30)
        totals = await load.stop()
    finally:
        await load.close()
    assert totals["failed"] == {}, totals
