"""Playlist watches in a real router: a watch reads the playlist through the router's proxy
from a real gRPC playlist module and requests every track; when the playlist gains a track the
next run requests only that one; status lists the watch; bad intervals are INVALID_ARGUMENT
with field details; a share URL, a URI and the id are one watch; a track the library still
lacks an interval after its request is requested again, three times at most; under mutual TLS
a module may not touch watches while the command line may.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from router.app import RouterApp
from router.settings import RouterSection, RouterSettings
from router.watches import PlaylistWatches
from services.kit.rpc.channel import open_channel
from services.kit.security.ca import ensure_identities
from services.kit.security.identity import CLI, ROUTER, Identity
from services.kit.security.tls import TlsSection, transport_for
from soulspot.router.v1 import router_pb2, status_pb2_grpc, watches_pb2, watches_pb2_grpc
from tests.helpers.fake_module import FakeModule

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

PLAYLIST = "pl-watched"
SIX_HOURS = duration_pb2.Duration(seconds=6 * 3600)


def _settings(**section: object) -> RouterSettings:
    values: dict[str, object] = {
        "address": "127.0.0.1:0",
        "health_poll_interval_s": 0.1,
        "health_retry_interval_s": 0.05,
        **section,
    }
    return RouterSettings(router=RouterSection.model_validate(values))


async def _until_run(
    stub: watches_pb2_grpc.PlaylistWatchServiceAsyncStub,
    playlist: str,
    timeout: float = 20.0,  # noqa: ASYNC109 (bounds the whole wait)
) -> watches_pb2.PlaylistWatch:
    """The watch once its first run has ended."""
    async with asyncio.timeout(timeout):
        while True:
            reply = await stub.ListPlaylistWatches(
                watches_pb2.ListPlaylistWatchesRequest(), timeout=5
            )
            for watch in reply.watches:
                if watch.playlist_id == playlist and watch.HasField("last_run_at"):
                    return watch
            await asyncio.sleep(0.05)


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[RouterApp]:
    watches = PlaylistWatches(tmp_path / "state", max_watches=2, playlist_wait_s=10.0)
    app = RouterApp(_settings(), watches=watches)
    await app.start()
    await watches.start(app.address)
    yield app
    await app.stop(0)


@pytest.fixture
async def playlist_module(router: RouterApp) -> AsyncIterator[FakeModule]:
    module = FakeModule(
        "t-fake", 10, capabilities=("playlist.tracks", "download.track", "download.status")
    )
    await module.start()
    await module.register(router.address)
    yield module
    await module.stop()


@pytest.fixture
async def stub(router: RouterApp) -> AsyncIterator[watches_pb2_grpc.PlaylistWatchServiceAsyncStub]:
    async with open_channel(router.address) as channel:
        yield watches_pb2_grpc.PlaylistWatchServiceStub(channel)


async def test_a_watch_requests_every_track_then_only_the_new_one(
    router: RouterApp,
    playlist_module: FakeModule,
    stub: watches_pb2_grpc.PlaylistWatchServiceAsyncStub,
) -> None:
    added = await stub.AddPlaylistWatch(
        watches_pb2.AddPlaylistWatchRequest(playlist_id=PLAYLIST, every=SIX_HOURS), timeout=5
    )
    assert added.created

    first = await _until_run(stub, PLAYLIST)
    assert not first.last_run_failed, first.last_result
    assert playlist_module.downloads == ["t-fake-0", "t-fake-1", "t-fake-2"]
    assert (first.tracks_in_playlist, first.last_requested, first.tracks_known) == (3, 3, 3)
    assert first.name == PLAYLIST  # the fake module names the playlist after its id
    # The next run is one interval after this one ended.
    gap = first.next_run_at.ToSeconds() - first.last_run_at.ToSeconds()
    assert gap == pytest.approx(6 * 3600, abs=1)

    playlist_module.behaviour.items = 4  # the playlist gains a track
    second = await stub.RunPlaylistWatch(
        watches_pb2.RunPlaylistWatchRequest(playlist_id=PLAYLIST), timeout=30
    )
    assert playlist_module.downloads == ["t-fake-0", "t-fake-1", "t-fake-2", "t-fake-3"]
    assert (second.watch.tracks_in_playlist, second.watch.last_requested) == (4, 1)
    assert second.watch.tracks_known == 4
    assert second.watch.last_result.startswith("1 new tracks requested")

    # Nothing new: nothing requested.
    third = await stub.RunPlaylistWatch(
        watches_pb2.RunPlaylistWatchRequest(playlist_id=PLAYLIST), timeout=30
    )
    assert third.watch.last_requested == 0
    assert len(playlist_module.downloads) == 4


async def test_status_lists_watched_playlists(
    router: RouterApp,
    playlist_module: FakeModule,
    stub: watches_pb2_grpc.PlaylistWatchServiceAsyncStub,
) -> None:
    await stub.AddPlaylistWatch(
        watches_pb2.AddPlaylistWatchRequest(playlist_id=PLAYLIST, every=SIX_HOURS), timeout=5
    )
    await _until_run(stub, PLAYLIST)
    async with open_channel(router.address) as channel:
        status = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            router_pb2.GetStatusRequest(), timeout=5
        )
    [watch] = status.watched_playlists
    assert watch.playlist_id == PLAYLIST
    assert watch.every.seconds == 6 * 3600
    assert watch.last_result.startswith("3 new tracks requested")


def _violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        request = error_details_pb2.BadRequest()
        if detail.Unpack(request):
            return {v.field: v.description for v in request.field_violations}
    return {}


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (watches_pb2.AddPlaylistWatchRequest(playlist_id=PLAYLIST), "every"),
        (
            watches_pb2.AddPlaylistWatchRequest(
                playlist_id=PLAYLIST, every=duration_pb2.Duration(seconds=60)
            ),
            "every",
        ),
        (
            watches_pb2.AddPlaylistWatchRequest(
                playlist_id=PLAYLIST, every=duration_pb2.Duration(seconds=31 * 86400)
            ),
            "every",
        ),
        (watches_pb2.AddPlaylistWatchRequest(every=SIX_HOURS), "playlist_id"),
        (
            watches_pb2.AddPlaylistWatchRequest(playlist_id="x" * 600, every=SIX_HOURS),
            "playlist_id",
        ),
    ],
)
async def test_a_bad_request_is_invalid_argument_naming_the_field(
    stub: watches_pb2_grpc.PlaylistWatchServiceAsyncStub,
    request_: watches_pb2.AddPlaylistWatchRequest,
    field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddPlaylistWatch(request_, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in _violations(caught.value)
    listed = await stub.ListPlaylistWatches(watches_pb2.ListPlaylistWatchesRequest(), timeout=5)
    assert list(listed.watches) == []


async def test_watches_beyond_the_setting_are_resource_exhausted_naming_it(
    stub: watches_pb2_grpc.PlaylistWatchServiceAsyncStub,
) -> None:
    for name in ("a", "b"):
        await stub.AddPlaylistWatch(
            watches_pb2.AddPlaylistWatchRequest(playlist_id=name, every=SIX_HOURS), timeout=5
        )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddPlaylistWatch(
            watches_pb2.AddPlaylistWatchRequest(playlist_id="c", every=SIX_HOURS), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "SOULSPOT_ROUTER__MAX_PLAYLIST_WATCHES" in (caught.value.details() or "")


async def test_removing_an_unknown_watch_is_not_found(
    stub: watches_pb2_grpc.PlaylistWatchServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RemovePlaylistWatch(
            watches_pb2.RemovePlaylistWatchRequest(playlist_id="nope"), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# -- one watch per playlist, however it is written; failed downloads tried again --------------

SPOTIFY_ID = "37i9dQZF1DXcBWIGoYBM5M"


async def test_a_share_url_and_a_uri_are_the_same_watch_as_the_id(
    playlist_module: FakeModule, stub: watches_pb2_grpc.PlaylistWatchServiceAsyncStub
) -> None:
    first = await stub.AddPlaylistWatch(
        watches_pb2.AddPlaylistWatchRequest(playlist_id=SPOTIFY_ID, every=SIX_HOURS), timeout=5
    )
    assert (first.created, first.watch.playlist_id) == (True, SPOTIFY_ID)
    # The same playlist again, as a share URL: not a second watch, its interval changes.
    again = await stub.AddPlaylistWatch(
        watches_pb2.AddPlaylistWatchRequest(
            playlist_id=f"https://open.spotify.com/playlist/{SPOTIFY_ID}?si=a1b2c3",
            every=duration_pb2.Duration(seconds=3600),
        ),
        timeout=5,
    )
    assert (again.created, again.watch.playlist_id) == (False, SPOTIFY_ID)
    assert again.watch.every.seconds == 3600
    listed = await stub.ListPlaylistWatches(watches_pb2.ListPlaylistWatchesRequest(), timeout=5)
    assert [w.playlist_id for w in listed.watches] == [SPOTIFY_ID]
    # The module is asked for the playlist by its id (it names the playlist after it).
    watch = await _until_run(stub, SPOTIFY_ID)
    assert watch.name == SPOTIFY_ID
    removed = await stub.RemovePlaylistWatch(
        watches_pb2.RemovePlaylistWatchRequest(playlist_id=f"spotify:playlist:{SPOTIFY_ID}"),
        timeout=5,
    )
    assert removed.watch.playlist_id == SPOTIFY_ID
    listed = await stub.ListPlaylistWatches(watches_pb2.ListPlaylistWatchesRequest(), timeout=5)
    assert list(listed.watches) == []


class _Clock:
    """The watches' clock, moved forward by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_track_still_missing_from_the_library_is_requested_again_three_times_at_most(
    tmp_path: Path,
) -> None:
    clock = _Clock()
    watches = PlaylistWatches(tmp_path / "state", playlist_wait_s=10.0, clock=clock)
    app = RouterApp(_settings(), watches=watches)
    await app.start()
    await watches.start(app.address)
    module = FakeModule("t-fake", 10, capabilities=("playlist.tracks", "download.track"))
    await module.start()
    try:
        await module.register(app.address)
        async with open_channel(app.address) as channel:
            stub = watches_pb2_grpc.PlaylistWatchServiceStub(channel)
            run = watches_pb2.RunPlaylistWatchRequest(playlist_id=PLAYLIST)
            await stub.AddPlaylistWatch(
                watches_pb2.AddPlaylistWatchRequest(playlist_id=PLAYLIST, every=SIX_HOURS),
                timeout=5,
            )
            await _until_run(stub, PLAYLIST)
            assert len(module.downloads) == 3
            # Within an interval of the request: a download may still be under way.
            await stub.RunPlaylistWatch(run, timeout=30)
            assert len(module.downloads) == 3
            # No library holds the tracks an interval later (their downloads failed, or no
            # pipeline filed them): each is requested again, up to three requests in all. The
            # scheduler may make that run itself once the clock moves; a run asked for waits
            # for it, so the count is settled when the call returns.
            for attempt in (2, 3, 3):
                clock.now += 6 * 3600 + 1
                await stub.RunPlaylistWatch(run, timeout=30)
                assert len(module.downloads) == 3 * attempt
            assert sorted(set(module.downloads)) == ["t-fake-0", "t-fake-1", "t-fake-2"]
    finally:
        await module.stop()
        await app.stop(0)


# -- mutual TLS: who may call -----------------------------------------------------------------

LIBRARY = Identity.module("library")


@pytest.fixture
async def secure_router(tmp_path: Path) -> AsyncIterator[tuple[RouterApp, TlsSection]]:
    tls = TlsSection(pki_dir=tmp_path / "pki")
    ensure_identities(tmp_path / "pki", (ROUTER, CLI, LIBRARY))
    app = RouterApp(
        _settings(),
        transport=transport_for(ROUTER, tls, tmp_path),
        watches=PlaylistWatches(tmp_path / "state"),
    )
    await app.start()
    yield app, tls
    await app.stop(0)


async def test_a_module_may_not_touch_watches_but_the_command_line_may(
    secure_router: tuple[RouterApp, TlsSection], tmp_path: Path
) -> None:
    app, tls = secure_router
    request = watches_pb2.AddPlaylistWatchRequest(playlist_id=PLAYLIST, every=SIX_HOURS)
    async with open_channel(
        app.address, transport=transport_for(LIBRARY, tls, tmp_path)
    ) as channel:
        module = watches_pb2_grpc.PlaylistWatchServiceStub(channel)
        calls = (
            module.AddPlaylistWatch(request, timeout=5),
            module.ListPlaylistWatches(watches_pb2.ListPlaylistWatchesRequest(), timeout=5),
            module.RemovePlaylistWatch(
                watches_pb2.RemovePlaylistWatchRequest(playlist_id=PLAYLIST), timeout=5
            ),
            module.RunPlaylistWatch(
                watches_pb2.RunPlaylistWatchRequest(playlist_id=PLAYLIST), timeout=5
            ),
        )
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert LIBRARY.uri in (caught.value.details() or "")

    async with open_channel(app.address, transport=transport_for(CLI, tls, tmp_path)) as channel:
        cli = watches_pb2_grpc.PlaylistWatchServiceStub(channel)
        added = await cli.AddPlaylistWatch(request, timeout=5)
        assert added.watch.owner == CLI.uri
        listed = await cli.ListPlaylistWatches(watches_pb2.ListPlaylistWatchesRequest(), timeout=5)
        assert [w.playlist_id for w in listed.watches] == [PLAYLIST]
