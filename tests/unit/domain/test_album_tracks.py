"""Tests of what album downloaders share about album tracks: their download ids, their
marks on download.completed, and their fate after a restart."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.domain.downloads.album_tracks import (
    ALBUM_ID_ATTRIBUTE,
    album_of,
    fail_interrupted_albums,
    track_download_id,
)
from services.domain.downloads.registry import DownloadRegistry, State
from services.kit.events.client import InMemoryBus
from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    from pathlib import Path

TRACK = references_pb2.TrackReference(title="Harbour Lights", artist="The Paper Lanterns")


def test_an_album_tracks_id_names_its_album_and_a_single_tracks_none() -> None:
    download_id = track_download_id("soulseek-album-1a2b", 2, 0)
    assert download_id == "soulseek-album-1a2b#2.1"
    assert album_of(download_id) == "soulseek-album-1a2b"
    assert album_of("soulseek-0123456789abcdef") is None


async def test_an_album_tracks_completion_carries_the_album_id_as_an_attribute() -> None:
    bus = InMemoryBus()
    registry = DownloadRegistry(bus, module="soulseek")
    record = registry.new(TRACK, "cli", download_id=track_download_id("soulseek-album-1", 1, 0))
    await registry.complete(
        record,
        references_pb2.FileReference(path="/x.flac", size_bytes=5),
        attributes={ALBUM_ID_ATTRIBUTE: "soulseek-album-1"},
    )
    await registry.flush()
    [completed] = bus.published
    assert completed.attributes[ALBUM_ID_ATTRIBUTE] == "soulseek-album-1"


async def test_after_a_restart_album_tracks_fail_with_their_album_and_singles_resume(
    tmp_path: Path,
) -> None:
    db = tmp_path / "downloads.sqlite3"
    before = DownloadRegistry(InMemoryBus(), module="soulseek", db_path=db)
    single = before.new(TRACK, "cli")
    first = before.new(TRACK, "cli", download_id=track_download_id("soulseek-album-9", 1, 0))
    second = before.new(TRACK, "cli", download_id=track_download_id("soulseek-album-9", 1, 1))
    for record in (first, second):
        record.source = "carol"
        record.state = State.DOWNLOAD_STATE_IN_PROGRESS
        before.save(record)
    await before.shutdown()

    bus = InMemoryBus()
    after = DownloadRegistry(bus, module="soulseek", db_path=db)
    left = await fail_interrupted_albums(after, await after.recover())
    await after.flush()
    assert [r.download_id for r in left] == [single.download_id]
    failed = bus.payloads("download.failed")
    assert sorted(f.download_id for f in failed) == sorted([first.download_id, second.download_id])
    [album] = bus.payloads("album.failed")
    assert album.album_download_id == "soulseek-album-9"
    assert "ask for the album again" in album.reason
    assert list(album.tried_sources) == ["carol"]
    await after.shutdown()
