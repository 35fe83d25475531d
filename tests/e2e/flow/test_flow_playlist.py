"""A 20-track playlist synced through the shared work queue by two worker processes."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from soulspot.events.v1 import playlist_pb2 as playlist_events_pb2
from tests.helpers.flows import (
    events,
    folder_env,
    library_tracks,
    sample_source,
    spotify_env,
    spotify_track,
    start_cli,
    start_stack,
)
from tests.standins.spotify import SpotifyStandin

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers.mesh import Mesh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLAYLIST = "pl20sync"


def playlist_samples(count: int) -> list[dict[str, Any]]:
    return [
        {
            "artist": f"Band {n % 4}",
            "album": f"Record {n % 3}",
            "title": f"Song Number {n}",
            "track_number": n,
            "year": 2010 + n % 5,
            "format": "flac",
            "seconds": 0.3,
        }
        for n in range(1, count + 1)
    ]


async def test_two_workers_handle_every_track_exactly_once(mesh: Mesh, tmp_path: Path) -> None:
    samples = playlist_samples(20)
    source = sample_source(tmp_path, samples)
    tracks = [spotify_track(s, n) for n, s in enumerate(samples, 1)]
    spotify = SpotifyStandin(
        tracks=tracks, playlists={PLAYLIST: [{"track": t, "is_local": False} for t in tracks]}
    )
    spotify.start()
    workers: list[asyncio.subprocess.Process] = []
    try:
        await start_stack(
            mesh,
            {
                "spotify": spotify_env(spotify),
                "folder": folder_env(tmp_path, source),
                "library": None,
            },
        )
        for _ in range(2):
            worker = await start_cli(mesh, "worker", "--consumer", "playlist-sync")
            workers.append(worker)
        for worker in workers:
            assert worker.stdout is not None
            line = await asyncio.wait_for(worker.stdout.readline(), 20)
            assert b"worker serving" in line, line

        sync = await start_cli(mesh, "sync-playlist", PLAYLIST, "--workers", "0", "--timeout", "60")
        output, _ = await asyncio.wait_for(sync.communicate(), 90)
        assert sync.returncode == 0, output.decode()

        handled = []
        for envelope in await events(mesh, types=("playlist.track_handled",)):
            payload = playlist_events_pb2.PlaylistTrackHandled()
            assert envelope.payload.Unpack(payload)
            handled.append(payload)
        positions = Counter(h.position for h in handled)
        assert sorted(positions) == list(range(1, 21))
        assert set(positions.values()) == {1}  # every track exactly once
        assert {h.outcome for h in handled} == {"downloaded"}
        assert len({h.worker for h in handled}) == 2  # both processes took jobs
        assert len(await events(mesh, types=("playlist.track_requested",))) == 20
        assert await library_tracks(mesh) == 20
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.terminate()
                await worker.wait()
        spotify.stop()
