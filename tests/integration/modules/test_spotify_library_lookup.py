"""Spotify search results say which tracks the library holds: the spotify module asks
library.check_downloaded through a real router's proxy (in-process) of a real library module."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel, wait_for_ready
from services.kit.testing.sample_audio import write_mp3
from services.library.module import SPEC as LIBRARY
from services.library.settings import LibrarySection, LibrarySettings
from services.spotify.module import SPEC as SPOTIFY
from services.spotify.settings import SpotifySection, SpotifySettings
from soulspot.capabilities.v1 import library_pb2, library_pb2_grpc, search_pb2, search_pb2_grpc
from soulspot.common.v1 import references_pb2
from tests.helpers.module_checks import make_bus
from tests.helpers.router import router_app
from tests.standins.spotify import SpotifyStandin, make_track

if TYPE_CHECKING:
    from pathlib import Path

    import grpc

SEARCH_SERVICE = "soulspot.capabilities.v1.SearchService"
LIBRARY_SERVICE = "soulspot.capabilities.v1.LibraryService"
TRACKS = [
    make_track(f"id{n}", f"Tide {n}", ["Mira Okonkwo"], "Copper Sky", isrc=f"QZSS1210000{n}")
    for n in range(3)
]


def _spotify_settings(spotify: SpotifyStandin, tmp_path: Path, router: str) -> SpotifySettings:
    return SpotifySettings(
        state_dir=tmp_path / "spotify-state",
        library_root=tmp_path / "library",
        router_address=router,
        spotify=SpotifySection(
            client_id="standin-id",
            client_secret="standin-secret",
            api_url=spotify.base_url,
            accounts_url=spotify.base_url,
            # The router runs in this process, and gRPC's xDS client gets no answer from a
            # grpc.aio server of its own process: the lookup goes through the router's proxy
            # here (tests/e2e/router/test_xds_channels_e2e.py calls over xDS, across processes).
            xds=False,
        ),
    )


async def _search(channel: grpc.aio.Channel) -> list[search_pb2.SearchResult]:
    stub = search_pb2_grpc.SearchServiceStub(channel)
    reply = await stub.SearchTrack(search_pb2.SearchTrackRequest(query="Tide Mira"), timeout=10)
    return sorted(reply.results, key=lambda r: r.track.title)


async def test_search_results_say_which_tracks_the_library_holds(tmp_path: Path) -> None:
    spotify = SpotifyStandin(tracks=TRACKS)
    spotify.start()
    router = router_app()
    await router.start()
    try:
        library_settings = LibrarySettings(
            state_dir=tmp_path / "library-state",
            library_root=tmp_path / "library",
            router_address=router.address,
            library=LibrarySection(import_dirs=[tmp_path / "dl"]),
        )
        async with (
            ModuleRuntime(SPOTIFY, _spotify_settings(spotify, tmp_path, router.address), port=0),
            open_channel(router.address) as channel,
        ):
            await wait_for_ready(router.address, 10, service=SEARCH_SERVICE)
            # No library module yet: the lookup fails fast and the search still answers.
            before = await _search(channel)
            assert [r.track.title for r in before] == ["Tide 0", "Tide 1", "Tide 2"]
            assert not any(r.in_library for r in before)

            async with ModuleRuntime(LIBRARY, library_settings, port=0, publisher=make_bus()):
                await wait_for_ready(router.address, 10, service=LIBRARY_SERVICE)
                held = TRACKS[1]
                source = write_mp3(tmp_path / "dl" / "tide.mp3", seconds=0.5, bitrate_kbps=320)
                await library_pb2_grpc.LibraryServiceStub(channel).ImportTrack(
                    library_pb2.ImportTrackRequest(
                        track=references_pb2.TrackReference(
                            title=held["name"],
                            artist="Mira Okonkwo",
                            album="Copper Sky",
                            isrc=held["external_ids"]["isrc"],
                        ),
                        file=references_pb2.FileReference(path=str(source)),
                    ),
                    timeout=10,
                )
                after = await _search(channel)
                assert [(r.track.title, r.in_library) for r in after] == [
                    ("Tide 0", False),
                    ("Tide 1", True),
                    ("Tide 2", False),
                ]
    finally:
        await router.stop(0)
        spotify.stop()
