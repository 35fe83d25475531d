"""`soulspot get`: the track a query names, and the wait that ends only when the track is in
the library.

The downloader's download.completed names the file in the downloads folder; the pipeline's
track.ready names it in the library. `get` must report the second: a wait that stopped at
download.completed would say "ready" before enrichment and import, with the wrong path.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest

from cli.commands.get import track_from_query, wait_until_ready
from cli.download_watch import DownloadWatch
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2, envelope_pb2, track_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TRACK = references_pb2.TrackReference(artist="The Paper Lanterns", title="Harbour Lights")
DOWNLOADED = "/downloads/folder/Harbour Lights.flac"
IN_LIBRARY = "/library/The Paper Lanterns/Harbour Lights.flac"


def test_artist_and_title_are_read_from_the_query() -> None:
    track = track_from_query("The Paper Lanterns - Harbour Lights")
    assert track is not None
    assert (track.artist, track.title) == ("The Paper Lanterns", "Harbour Lights")


def test_only_the_first_separator_splits() -> None:
    track = track_from_query("  Artist -  Song - Live at Home ")
    assert track is not None
    assert (track.artist, track.title) == ("Artist", "Song - Live at Home")


@pytest.mark.parametrize("query", ["Harbour Lights", "Artist -", " - Title", "Artist-Title"])
def test_other_queries_name_no_track(query: str) -> None:
    assert track_from_query(query) is None


@pytest.fixture
async def watch() -> AsyncIterator[DownloadWatch]:
    # Events are handed to the watch's handler directly; its subscription never connects.
    channel = grpc.aio.insecure_channel("127.0.0.1:9")
    try:
        yield DownloadWatch(channel, "test")
    finally:
        await channel.close()


async def _deliver(watch: DownloadWatch, event_type: str, payload: object) -> None:
    await watch.on_event(payload, envelope_pb2.EventEnvelope(event_type=event_type))


async def test_get_waits_past_download_completed_until_track_ready_names_the_library_path(
    watch: DownloadWatch, capsys: pytest.CaptureFixture[str]
) -> None:
    waiting = asyncio.create_task(wait_until_ready(watch, "d1", TRACK, timeout=10))
    await asyncio.sleep(0)
    await _deliver(
        watch,
        "download.completed",
        download_pb2.DownloadCompleted(
            download_id="d1", track=TRACK, file=references_pb2.FileReference(path=DOWNLOADED)
        ),
    )
    done, _ = await asyncio.wait({waiting}, timeout=0.3)
    assert not done, "the wait ended at download.completed, before the library had the track"

    await _deliver(
        watch,
        "track.ready",
        track_pb2.TrackReady(
            download_id="d1", track=TRACK, file=references_pb2.FileReference(path=IN_LIBRARY)
        ),
    )
    assert await asyncio.wait_for(waiting, 5) == 0
    printed = capsys.readouterr().out.replace("\n", "")
    assert f"ready: {IN_LIBRARY}" in printed
    assert DOWNLOADED not in printed


async def test_download_completed_alone_is_not_ready(
    watch: DownloadWatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await _deliver(
        watch,
        "download.completed",
        download_pb2.DownloadCompleted(
            download_id="d1", track=TRACK, file=references_pb2.FileReference(path=DOWNLOADED)
        ),
    )
    assert await wait_until_ready(watch, "d1", TRACK, timeout=0.3) == 1
    captured = capsys.readouterr()
    assert "timed out" in captured.err
    assert "ready:" not in captured.out
