"""Playlist watches across router restarts, with the router and a playlist module as real
processes under mutual TLS: the schedule and the tracks a watch requested live in the state
folder; a run missed while the router was down runs once soon after it is back."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import TYPE_CHECKING

import pytest
from google.protobuf import duration_pb2

from router.watches.store import DB_FILE
from services.kit.rpc.channel import open_channel, wait_for_ready
from soulspot.router.v1 import router_pb2, status_pb2_grpc, watches_pb2, watches_pb2_grpc
from tests.helpers.processes import Process, free_port, start_module, start_router

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLAYLIST = "pl-restart"
EVERY_S = 300


async def _watch(
    router: Process,
    until: Callable[[watches_pb2.PlaylistWatch], bool] = lambda _w: True,
    timeout: float = 40.0,  # noqa: ASYNC109 (bounds the whole wait)
) -> watches_pb2.PlaylistWatch:
    """The watch of PLAYLIST once `until` holds for it."""
    async with open_channel(router.address, transport=router.client) as channel:
        stub = watches_pb2_grpc.PlaylistWatchServiceStub(channel)
        async with asyncio.timeout(timeout):
            while True:
                reply = await stub.ListPlaylistWatches(
                    watches_pb2.ListPlaylistWatchesRequest(), timeout=5
                )
                for watch in reply.watches:
                    if watch.playlist_id == PLAYLIST and until(watch):
                        return watch
                await asyncio.sleep(0.1)


async def _until_routable(router: Process, capability: str) -> None:
    async with open_channel(router.address, transport=router.client) as channel:
        status = status_pb2_grpc.StatusServiceStub(channel)
        async with asyncio.timeout(20):
            while True:
                reply = await status.GetStatus(router_pb2.GetStatusRequest(), timeout=5)
                if any(
                    p.routable
                    for c in reply.capabilities
                    if c.name == capability
                    for p in c.providers
                ):
                    return
                await asyncio.sleep(0.1)


# Three router starts, each several seconds on a loaded machine.
@pytest.mark.timeout(180)
async def test_the_schedule_survives_restarts_and_a_missed_run_runs_once(tmp_path: Path) -> None:
    port = free_port()
    router = start_router(tmp_path, port)
    module: Process | None = None
    try:
        await wait_for_ready(router.address, 20, transport=router.client)
        module = start_module(tmp_path, "t-fake", router.address, priority=10)
        await _until_routable(router, "playlist.tracks")
        async with open_channel(router.address, transport=router.client) as channel:
            await watches_pb2_grpc.PlaylistWatchServiceStub(channel).AddPlaylistWatch(
                watches_pb2.AddPlaylistWatchRequest(
                    playlist_id=PLAYLIST, every=duration_pb2.Duration(seconds=EVERY_S)
                ),
                timeout=5,
            )
        first = await _watch(router, lambda w: w.HasField("last_run_at"))
        assert not first.last_run_failed, first.last_result
        assert (first.last_requested, first.tracks_known) == (3, 3)

        # A restart within the interval: the same schedule, no run, the tracks remembered.
        router.stop()
        router = start_router(tmp_path, port)
        await wait_for_ready(router.address, 20, transport=router.client)
        after = await _watch(router)
        assert after.next_run_at == first.next_run_at
        assert after.last_run_at == first.last_run_at
        assert after.tracks_known == 3

        # Down across three intervals: the missed run happens once, soon after the start.
        router.stop()
        missed = time.time() - 3 * EVERY_S
        with sqlite3.connect(tmp_path / "state" / DB_FILE) as db:
            db.execute("UPDATE watches SET next_run_at = ?", (missed,))
        db.close()
        router = start_router(tmp_path, port)
        await wait_for_ready(router.address, 20, transport=router.client)
        caught_up = await _watch(
            router, lambda w: w.last_run_at.ToSeconds() > first.last_run_at.ToSeconds()
        )
        assert not caught_up.last_run_failed, caught_up.last_result
        # Every track was requested before: the library is not asked for them again.
        assert (caught_up.last_requested, caught_up.tracks_known) == (0, 3)
        gap = caught_up.next_run_at.ToSeconds() - caught_up.last_run_at.ToSeconds()
        assert gap == pytest.approx(EVERY_S, abs=1)  # one run, the next a full interval on
        assert caught_up.next_run_at.ToSeconds() > time.time()
    finally:
        if module is not None:
            module.stop()
        router.stop()
