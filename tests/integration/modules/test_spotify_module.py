"""The spotify module as a real gRPC server against the Spotify stand-in."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel
from services.spotify.module import SPEC
from services.spotify.settings import SpotifySection, SpotifySettings
from soulspot.capabilities.v1 import playlist_pb2, playlist_pb2_grpc, search_pb2, search_pb2_grpc
from tests.helpers.module_checks import (
    eventually,
    health_status,
    make_bus,
    reflected_services,
    rpc_error,
    violated_fields,
)
from tests.helpers.spotify_credentials import credential_variables, names_in_full
from tests.helpers.spotify_user_login import log_in_as_user
from tests.standins.spotify import SpotifyStandin, make_track

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

SEARCH = "soulspot.capabilities.v1.SearchService"
PLAYLIST = "soulspot.capabilities.v1.PlaylistService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PID = "3cEYpjA9oz9GiPac4AsH4n"
EDITORIAL = "37i9dQZF1DXcBWIGoYBM5M"
PLAYLIST_NAME = "Copper Sky, complete"

TRACKS = [
    make_track(f"id{n:03d}", f"Song {n}", ["Mira Okonkwo"], "Copper Sky", isrc=f"QZSS1210{n:04d}")
    for n in range(130)
]


def playlist_items() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"track": t, "is_local": False} for t in TRACKS]
    # As Spotify returns them: a removed track (null) and a local file, both skipped.
    items.insert(5, {"track": None, "is_local": False})
    items.insert(50, {"track": {**TRACKS[0], "id": None, "is_local": True}, "is_local": True})
    return items


@pytest.fixture
def spotify() -> Iterator[SpotifyStandin]:
    standin = SpotifyStandin(
        tracks=TRACKS,
        playlists={PID: playlist_items()},
        playlist_names={PID: PLAYLIST_NAME},
        inaccessible_playlists={EDITORIAL},
    )
    standin.start()
    yield standin
    standin.stop()


class Module:
    def __init__(self, rt: ModuleRuntime[SpotifySection], channel: grpc.aio.Channel) -> None:
        self.rt = rt
        self.channel = channel
        self.search = search_pb2_grpc.SearchServiceStub(channel)
        self.playlists = playlist_pb2_grpc.PlaylistServiceStub(channel)


async def _module(tmp_path: Path, section: SpotifySection) -> AsyncIterator[Module]:
    settings = SpotifySettings(
        state_dir=tmp_path / "state", library_root=tmp_path / "library", spotify=section
    )
    async with (
        ModuleRuntime(SPEC, settings, port=0, publisher=make_bus(), connect_router=False) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        yield Module(rt, channel)


@pytest.fixture
async def module(tmp_path: Path, spotify: SpotifyStandin) -> AsyncIterator[Module]:
    section = SpotifySection(
        client_id="standin-id",
        client_secret="standin-secret",
        api_url=spotify.base_url,
        accounts_url=spotify.base_url,
    )
    async for m in _module(tmp_path, section):
        await eventually(lambda: spotify.tokens_issued > 0, what="the first health probe")
        yield m


async def test_search(module: Module, spotify: SpotifyStandin) -> None:
    reply = await module.search.SearchTrack(
        search_pb2.SearchTrackRequest(query="Song 7 Mira"), timeout=10
    )
    assert [r.track.title for r in reply.results] == ["Song 7"]
    [result] = reply.results
    assert (result.source, result.score) == ("spotify", 1.0)
    assert result.track.isrc == "QZSS12100007"
    many = await module.search.SearchTrack(
        search_pb2.SearchTrackRequest(query="Copper Sky", limit=0), timeout=10
    )
    assert len(many.results) == 10  # the default limit
    assert [r.score for r in many.results] == sorted((r.score for r in many.results), reverse=True)
    assert spotify.tokens_issued == 1  # the token is cached across calls


@pytest.mark.parametrize(
    "reference",
    [PID, f"spotify:playlist:{PID}", f"https://open.spotify.com/playlist/{PID}?si=x"],
)
async def test_playlist_follows_every_page(
    module: Module, spotify: SpotifyStandin, reference: str
) -> None:
    spotify.rate_limit_next(1, retry_after_s=0)
    call = module.playlists.ListPlaylistTracks(
        playlist_pb2.ListPlaylistTracksRequest(playlist_id=reference), timeout=10
    )
    replies = [r async for r in call]
    assert [r.track.spotify_id for r in replies] == [t["id"] for t in TRACKS]
    assert [r.position for r in replies] == list(range(1, 131))
    # Spotify's item count, which includes the removed track and the local file skipped here.
    assert {(r.total, r.playlist_name) for r in replies} == {(132, PLAYLIST_NAME)}
    assert spotify.rate_limited_served == 1
    # The 429, then name and total, then two pages of tracks.
    paths = [r.path for r in spotify.requests_to("/v1/playlists/")]
    assert paths == [f"/v1/playlists/{PID}"] * 2 + [f"/v1/playlists/{PID}/tracks"] * 2
    assert spotify.requests_to(f"/v1/playlists/{PID}")[0].query["fields"] == ["name,tracks.total"]


async def test_playlist_streams_tracks_before_the_last_page_is_read(
    module: Module, spotify: SpotifyStandin
) -> None:
    last_page = spotify.hold_playlist_page(PID, offset=100)
    call = module.playlists.ListPlaylistTracks(
        playlist_pb2.ListPlaylistTracksRequest(playlist_id=PID), timeout=10
    )
    stream = call.__aiter__()
    try:
        # Only reachable while the last page is withheld if tracks are not buffered; a
        # buffering servicer runs into this wait's limit instead.
        first = await asyncio.wait_for(stream.__anext__(), timeout=5)
        pages = [r.query["offset"] for r in spotify.requests_to(f"/v1/playlists/{PID}/tracks")]
        answered_before_first = [p for p in pages if p != ["100"]]
    finally:
        last_page.release()
    rest = [r async for r in stream]
    assert answered_before_first == [["0"]]
    assert (first.track.spotify_id, first.position) == (TRACKS[0]["id"], 1)
    assert len(rest) == 129
    assert {(r.total, r.playlist_name) for r in [first, *rest]} == {(132, PLAYLIST_NAME)}


async def test_liked_songs_read_each_page_once(
    module: Module, spotify: SpotifyStandin, tmp_path: Path
) -> None:
    # 120 liked songs are three pages of 50; the total comes with the first of them.
    spotify.liked = [{"added_at": "2024-01-01T00:00:00Z", "track": t} for t in TRACKS[:120]]
    await asyncio.to_thread(log_in_as_user, spotify, tmp_path / "state" / "spotify" / "token.json")
    call = module.playlists.ListPlaylistTracks(
        playlist_pb2.ListPlaylistTracksRequest(playlist_id="liked"), timeout=10
    )
    replies = [r async for r in call]
    assert [r.track.spotify_id for r in replies] == [t["id"] for t in TRACKS[:120]]
    assert {(r.total, r.playlist_name) for r in replies} == {(120, "Liked Songs")}
    offsets = [r.query.get("offset") for r in spotify.requests_to("/v1/me/tracks")]
    # One request per page: page one is not asked for again for the total.
    assert offsets == [["0"], ["50"], ["100"]]


async def test_editorial_playlist_is_not_found_with_the_reason(
    module: Module, spotify: SpotifyStandin
) -> None:
    call = module.playlists.ListPlaylistTracks(
        playlist_pb2.ListPlaylistTracksRequest(playlist_id=EDITORIAL), timeout=10
    )
    error = await rpc_error(_drain(call))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert "editorial" in error.message
    assert "client-credentials" in error.message
    # The name request already answers 404; no page of tracks is asked for.
    assert spotify.requests_to(f"/v1/playlists/{EDITORIAL}/tracks") == []
    # A missing playlist says nothing about Spotify's health.
    assert await health_status(module.channel, PLAYLIST) == SERVING


async def test_bad_requests(module: Module) -> None:
    empty = await rpc_error(module.search.SearchTrack(search_pb2.SearchTrackRequest(), timeout=5))
    assert violated_fields(empty) == ["query"]
    nonsense = await rpc_error(
        _drain(
            module.playlists.ListPlaylistTracks(
                playlist_pb2.ListPlaylistTracksRequest(playlist_id="https://example.com/x"),
                timeout=5,
            )
        )
    )
    assert nonsense.code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(nonsense) == ["playlist_id"]


async def test_health_and_reflection(module: Module) -> None:
    for service in (SEARCH, PLAYLIST):
        assert await health_status(module.channel, service) == SERVING
    assert {SEARCH, PLAYLIST} <= await reflected_services(module.channel)


async def test_without_credentials_not_serving_with_the_reason(tmp_path: Path) -> None:
    async for module in _module(tmp_path, SpotifySection()):
        # What a user reads, in the status and in a refused call: which variables to set.
        variables = credential_variables()
        assert await health_status(module.channel, SEARCH) == NOT_SERVING
        assert "Spotify credentials" in module.rt.health_reason
        assert names_in_full(module.rt.health_reason, variables) == list(variables)
        error = await rpc_error(
            module.search.SearchTrack(search_pb2.SearchTrackRequest(query="x"), timeout=5)
        )
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert names_in_full(error.message, variables) == list(variables)


async def test_rejected_credentials_not_serving(tmp_path: Path, spotify: SpotifyStandin) -> None:
    section = SpotifySection(
        client_id="wrong",
        client_secret="wrong",
        api_url=spotify.base_url,
        accounts_url=spotify.base_url,
    )
    async for module in _module(tmp_path, section):
        await eventually(partial(_not_serving, module.rt), what="the health probe")
        assert "rejected the client credentials" in module.rt.health_reason
        assert await health_status(module.channel, SEARCH) == NOT_SERVING


def _not_serving(rt: ModuleRuntime[SpotifySection]) -> bool:
    return not rt.serving


async def _drain(call: Any) -> None:
    async for _ in call:
        pass
