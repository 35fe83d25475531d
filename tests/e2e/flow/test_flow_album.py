"""Whole albums through real processes: `soulspot get --album` from the folder source, by the
folder's shape alone and by Spotify's track list; a Soulseek album from the best peer folder,
falling back to another peer's when a file of the first fails; and no complete folder
anywhere: album.failed and nothing in the library."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, cast

import grpc
import pytest

from services.kit.events.client import unpack_payload
from services.kit.rpc.context import CORRELATION_ID_KEY
from services.kit.testing.sample_audio import make_sample_library
from soulspot.capabilities.v1 import album_pb2, album_pb2_grpc
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import album_pb2 as album_events_pb2
from tests.helpers.flows import (
    METADATA_ENV,
    events,
    folder_env,
    library_tracks,
    require_pipeline,
    run_cli,
    spotify_env,
    spotify_track,
    wait_event,
)
from tests.standins.slskd import ERRORED, Peer, PeerFile, SlskdStandin
from tests.standins.spotify import SpotifyStandin

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers.mesh import Mesh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# unpack_payload finds payload classes in the default descriptor pool.
EVENT_CONTRACTS = (album_events_pb2,)
ARTIST, ALBUM = "The Paper Lanterns", "Night Ferry"
TITLES = ["Harbour Lights", "Salt Road", "Lantern Song"]
API_KEY = "standin-key"
PIPELINE = {"metadata": METADATA_ENV, "library": None, "notifications": None}


def _album(album: str = ALBUM, fmt: str = "flac") -> list[dict[str, Any]]:
    return [
        {
            "artist": ARTIST,
            "album": album,
            "title": title,
            "track_number": n,
            "seconds": 2.0,
            "format": fmt,
            "year": 2019,
        }
        for n, title in enumerate(TITLES, 1)
    ]


def _track_list() -> list[references_pb2.TrackReference]:
    return [
        references_pb2.TrackReference(title=t, artist=ARTIST, duration_ms=2000, track_number=n)
        for n, t in enumerate(TITLES, 1)
    ]


async def _download_album(
    mesh: Mesh, correlation_id: str, tracks: list[references_pb2.TrackReference]
) -> album_pb2.DownloadAlbumResponse:
    stub = album_pb2_grpc.AlbumServiceStub(mesh.channel())
    reply: album_pb2.DownloadAlbumResponse = await stub.DownloadAlbum(
        album_pb2.DownloadAlbumRequest(
            artist=ARTIST, album=ALBUM, tracks=tracks, requested_by="cli"
        ),
        metadata=((CORRELATION_ID_KEY, correlation_id),),
        timeout=60,
    )
    return reply


def _library_files(mesh: Mesh) -> list[Path]:
    return sorted(p for p in mesh.library_root.rglob("*") if p.is_file())


async def test_get_album_files_every_track_of_the_folder_in_the_library(
    mesh: Mesh, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    make_sample_library(source, _album())
    # A live recording of the same album, and an incomplete other album: neither is chosen.
    make_sample_library(source, _album(f"{ALBUM} (Live)"))
    make_sample_library(source, _album("Night Ferry Demos")[:1])
    await _start(mesh, {"folder": folder_env(tmp_path, source), **PIPELINE})
    text = await _get_album_cli(mesh)
    # No module serves album.tracks here: the folder's shape decides, and the command says so.
    assert "no track list" in text
    assert "album ready" in text
    _, ready = await wait_event(mesh, "album.ready")
    paths = [t.path for t in ready.tracks]
    assert [t.title for t in ready.tracks] == TITLES
    for path in paths:
        assert path.startswith(str(mesh.library_root)), path
        assert path in text.replace("\n", "")
    assert sorted(str(p) for p in _library_files(mesh)) == sorted(paths)
    assert all("Live" not in path for path in paths)


async def _get_album_cli(mesh: Mesh) -> str:
    """`soulspot get --album` as a process; its output (it must succeed)."""
    code, text = await run_cli(mesh, "get", "--album", f"{ARTIST} - {ALBUM}", "--timeout", "60")
    assert code == 0, text
    return text


async def test_get_album_with_spotifys_track_list_picks_the_folder_that_matches_it(
    mesh: Mesh, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    # Shaped like the album (one format, named like it) but holding another song: only the
    # track list tells it apart from the real album.
    decoy = _album(f"{ALBUM} Sessions")
    decoy[2] = {**decoy[2], "title": "Something Else Entirely"}
    make_sample_library(source, decoy)
    make_sample_library(source, _album())
    spotify = SpotifyStandin(tracks=[spotify_track(t, n) for n, t in enumerate(_album(), 1)])
    spotify.start()
    try:
        await _start(
            mesh,
            {"spotify": spotify_env(spotify), "folder": folder_env(tmp_path, source), **PIPELINE},
        )
        text = await _get_album_cli(mesh)
        assert f"({len(TITLES)} tracks)" in text
        _, started = await wait_event(mesh, "album.download_started")
        assert started.folder == f"{ARTIST}/{ALBUM}"
        _, ready = await wait_event(mesh, "album.ready")
        assert [t.title for t in ready.tracks] == TITLES
        assert len(spotify.requests_to("/v1/search")) == 1
    finally:
        spotify.stop()


def _remote(user: str, album: str, n: int, title: str) -> str:
    return f"@@{user}\\Music\\{ARTIST}\\{album}\\{n:02d} - {title}.flac"


async def _start(mesh: Mesh, modules: dict[str, dict[str, str] | None]) -> None:
    """The router with its pipeline, then `modules`; deadlines long enough for a loaded
    machine, where a module's start can take most of the usual 20 seconds."""
    mesh.start_router()
    await mesh.wait_serving("router", timeout=60)
    await require_pipeline(mesh)
    for name, env in modules.items():
        mesh.start_module(name, env)
    for name in modules:
        await mesh.wait_serving(name, timeout=60)
    for name in ("folder", "soulseek"):
        if name in modules:
            await mesh.wait_routable(name, "download.album", timeout=60)


async def _soulseek_stack(mesh: Mesh, tmp_path: Path, standin: SlskdStandin) -> None:
    url = standin.start()
    await _start(
        mesh,
        {
            "soulseek": {
                "SOULSPOT_SOULSEEK__URL": url,
                "SOULSPOT_SOULSEEK__API_KEY": API_KEY,
                "SOULSPOT_SOULSEEK__DOWNLOADS_DIR": str(standin.downloads_dir),
                "SOULSPOT_SOULSEEK__POLL_INTERVAL_S": "0.1",
                "SOULSPOT_SOULSEEK__PROBE_INTERVAL_S": "0.5",
            },
            **PIPELINE,
        },
    )


async def test_soulseek_album_falls_back_to_another_peers_folder(
    mesh: Mesh, tmp_path: Path
) -> None:
    # bob ranks first (a free slot, no queue) but his second file fails; carol's folder is whole.
    bob = Peer(
        "bob",
        [
            PeerFile(
                _remote("bob", ALBUM, n, t),
                seconds=2.0,
                bit_depth=16,
                final_state=ERRORED if n == 2 else "Completed, Succeeded",
                polls_to_finish=1 if n != 2 else 3,
            )
            for n, t in enumerate(TITLES, 1)
        ],
    )
    carol = Peer(
        "carol",
        [
            PeerFile(_remote("carol", ALBUM, n, t), seconds=2.0, bit_depth=16)
            for n, t in enumerate(TITLES, 1)
        ],
        has_free_upload_slot=False,
        queue_length=5,
    )
    downloads = tmp_path / "downloads" / "slskd"
    standin = SlskdStandin(api_key=API_KEY, downloads_dir=downloads, peers=[bob, carol])
    try:
        await _soulseek_stack(mesh, tmp_path, standin)
        correlation = uuid.uuid4().hex
        answer = await _download_album(mesh, correlation, _track_list())
        assert answer.source == "bob"
        assert answer.candidates == 2
        _, ready = await wait_event(
            mesh,
            "album.ready",
            where=lambda p: p.album_download_id == answer.album_download_id,
            timeout=60,
        )
        assert ready.source == "carol"
        assert [t.title for t in ready.tracks] == TITLES
        assert all(t.path.startswith(str(mesh.library_root)) for t in ready.tracks)
        assert await library_tracks(mesh) == len(TITLES)
        started: list[Any] = [
            unpack_payload(e)
            for e in await events(
                mesh, correlation_id=correlation, types=("album.download_started",)
            )
        ]
        assert [(s.source, s.attempt) for s in started] == [("bob", 1), ("carol", 2)]
        # bob's tracks were given up as a whole; only carol's went through the pipeline.
        abandoned = await events(mesh, correlation_id=correlation, types=("download.failed",))
        assert len(abandoned) == len(TITLES)
        reasons = [cast("Any", unpack_payload(e)).reason for e in abandoned]
        assert all("album folder abandoned" in reason for reason in reasons)
        completed = await events(mesh, correlation_id=correlation, types=("download.completed",))
        assert len(completed) == len(TITLES)
        assert {e.attributes["album_download_id"] for e in completed} == {answer.album_download_id}
        assert {cast("Any", unpack_payload(e)).source for e in completed} == {"carol"}
    finally:
        standin.stop()


async def test_no_complete_folder_fails_the_album_and_leaves_the_library_empty(
    mesh: Mesh, tmp_path: Path
) -> None:
    # dave has two of the three tracks: not the whole album.
    dave = Peer(
        "dave",
        [
            PeerFile(_remote("dave", ALBUM, n, t), seconds=2.0, bit_depth=16)
            for n, t in list(enumerate(TITLES, 1))[:2]
        ],
    )
    downloads = tmp_path / "downloads" / "slskd"
    standin = SlskdStandin(api_key=API_KEY, downloads_dir=downloads, peers=[dave])
    try:
        await _soulseek_stack(mesh, tmp_path, standin)
        correlation = uuid.uuid4().hex
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _download_album(mesh, correlation, _track_list())
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        message = raised.value.details() or ""
        assert "no complete folder" in message
        assert "2 audio files, the album has 3 tracks" in message
        assert "What to do" in message
        _, failed = await wait_event(mesh, "album.failed", correlation_id=correlation)
        assert failed.reason == message
        assert await library_tracks(mesh) == 0
        assert _library_files(mesh) == []
        assert not [p for p in downloads.rglob("*") if p.is_file()]
    finally:
        standin.stop()
