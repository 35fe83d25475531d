"""Two real routers whose playlist watches live in one JetStream KV bucket: a watch added
through one router is run, listed, run again and removed through the other, and the playlist
module sees each run's downloads once."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from google.protobuf import duration_pb2

from router.app import RouterApp
from router.settings import RouterSection, RouterSettings
from router.watches import PlaylistWatches
from router.watches.kv_store import KvWatchStore
from services.kit.rpc.channel import open_channel
from soulspot.router.v1 import watches_pb2, watches_pb2_grpc
from tests.helpers.fake_module import FakeModule

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers.nats_server import NatsServerProcess

PLAYLIST = "pl-shared"
SIX_HOURS = duration_pb2.Duration(seconds=6 * 3600)


async def _router(nats_url: str, state: Path) -> RouterApp:
    settings = RouterSettings(
        router=RouterSection(
            address="127.0.0.1:0", health_poll_interval_s=0.1, health_retry_interval_s=0.05
        )
    )
    watches = PlaylistWatches(
        state, store=KvWatchStore([nats_url], lease_s=5.0), playlist_wait_s=10.0
    )
    app = RouterApp(settings, watches=watches)
    await app.start()
    await watches.start(app.address)
    return app


async def test_a_watch_added_through_one_router_is_run_and_removed_through_the_other(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    apps = [await _router(nats_server.url, tmp_path / name) for name in ("a", "b")]
    channels = [open_channel(app.address) for app in apps]
    first, second = (watches_pb2_grpc.PlaylistWatchServiceStub(c) for c in channels)
    module = FakeModule(
        "t-fake", 10, capabilities=("playlist.tracks", "download.track", "download.status")
    )
    await module.start()
    try:
        for app in apps:
            await module.register(app.address)
        added = await first.AddPlaylistWatch(
            watches_pb2.AddPlaylistWatchRequest(playlist_id=PLAYLIST, every=SIX_HOURS),
            timeout=5,
        )
        assert added.created
        listed = await _until_run(second)
        assert not listed.last_run_failed, listed.last_result
        assert listed.tracks_known == 3
        assert module.downloads == ["t-fake-0", "t-fake-1", "t-fake-2"]

        # Run through the other router: it knows the tracks the first one requested.
        module.behaviour.items = 4
        again = await second.RunPlaylistWatch(
            watches_pb2.RunPlaylistWatchRequest(playlist_id=PLAYLIST), timeout=30
        )
        assert again.watch.last_requested == 1
        assert module.downloads == ["t-fake-0", "t-fake-1", "t-fake-2", "t-fake-3"]

        await second.RemovePlaylistWatch(
            watches_pb2.RemovePlaylistWatchRequest(playlist_id=PLAYLIST), timeout=5
        )
        remaining = await first.ListPlaylistWatches(
            watches_pb2.ListPlaylistWatchesRequest(), timeout=5
        )
        assert list(remaining.watches) == []
    finally:
        await module.stop()
        for channel in channels:
            await channel.close()
        for app in apps:
            await app.stop(0)


async def _until_run(
    stub: watches_pb2_grpc.PlaylistWatchServiceAsyncStub,
) -> watches_pb2.PlaylistWatch:
    """The watch, as this router lists it, once a run has ended (on whichever router)."""
    async with asyncio.timeout(20):
        while True:
            reply = await stub.ListPlaylistWatches(
                watches_pb2.ListPlaylistWatchesRequest(), timeout=5
            )
            for watch in reply.watches:
                if watch.playlist_id == PLAYLIST and watch.HasField("last_run_at"):
                    return watch
            await asyncio.sleep(0.05)
