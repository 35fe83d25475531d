"""Tests of the album tracker: album.ready after the last track's pipeline run, album.failed
with every track's outcome when a run failed, and an album that survives a restart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from router.pipeline.albums import ALBUM_ID_ATTRIBUTE, ALBUM_TRACKS_ATTRIBUTE, AlbumTracker
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import album_pb2 as album_events_pb2
from soulspot.events.v1 import download_pb2 as download_events_pb2
from soulspot.events.v1 import envelope_pb2
from soulspot.events.v1 import pipeline_pb2 as pipeline_events_pb2
from soulspot.events.v1 import track_pb2 as track_events_pb2

if TYPE_CHECKING:
    from pathlib import Path

    import grpc

    from router.pipeline.publish import RunPublisher

ALBUM_ID = "soulseek-album-1"


class RecordingPublisher:
    """Keeps what the tracker publishes, with the event ids it chose."""

    def __init__(self) -> None:
        self.published: list[tuple[Any, str]] = []

    async def publish(self, payload: Any, *, event_id: str, **_: Any) -> None:
        self.published.append((payload, event_id))


def _tracker(state_dir: Path, publisher: RecordingPublisher) -> AlbumTracker:
    return AlbumTracker(
        cast("grpc.aio.Channel", None),
        cast("RunPublisher", publisher),
        state_dir,
        consumer="test-albums",
    )


async def _completed(tracker: AlbumTracker, n: int, *, album: str = ALBUM_ID) -> None:
    event = download_events_pb2.DownloadCompleted(
        download_id=f"d{n}",
        track=references_pb2.TrackReference(
            title=f"Song {n}", artist="Artist", album="Album", track_number=n
        ),
        source="carol",
    )
    envelope = envelope_pb2.EventEnvelope(
        attributes={ALBUM_ID_ATTRIBUTE: album, ALBUM_TRACKS_ATTRIBUTE: "2"} if album else {}
    )
    await tracker._on_completed(event, envelope)


async def _ready(tracker: AlbumTracker, n: int) -> None:
    event = track_events_pb2.TrackReady(download_id=f"d{n}")
    event.file.path = f"/library/Artist/Album/0{n} - Song {n}.flac"
    await tracker._on_ready(event, envelope_pb2.EventEnvelope())


async def test_album_ready_goes_out_after_the_last_tracks_run_only(tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    tracker = _tracker(tmp_path, publisher)
    await _completed(tracker, 2)
    await _completed(tracker, 1)
    await _ready(tracker, 1)
    assert publisher.published == []
    assert tracker.in_progress()[0]["tracks_done"] == 1
    await _ready(tracker, 2)
    [(ready, _)] = publisher.published
    assert isinstance(ready, album_events_pb2.AlbumReady)
    assert [t.title for t in ready.tracks] == ["Song 1", "Song 2"]
    assert ready.tracks[1].path.endswith("02 - Song 2.flac")
    assert ready.source == "carol"
    assert tracker.in_progress() == []


async def test_a_failed_run_makes_the_album_failed_and_partial_with_every_outcome(
    tmp_path: Path,
) -> None:
    publisher = RecordingPublisher()
    tracker = _tracker(tmp_path, publisher)
    await _completed(tracker, 1)
    await _completed(tracker, 2)
    await _ready(tracker, 1)
    await tracker._on_run_failed(
        pipeline_events_pb2.PipelineRunFailed(
            pipeline_run_id="r2", capability="import.track", reason="disk full", download_id="d2"
        ),
        envelope_pb2.EventEnvelope(),
    )
    [(failed, _)] = publisher.published
    assert isinstance(failed, album_events_pb2.AlbumFailed)
    assert failed.partial
    assert "1 of 2 tracks" in failed.reason
    assert "import.track: disk full" in failed.reason
    assert [(t.title, bool(t.path), t.error) for t in failed.tracks] == [
        ("Song 1", True, ""),
        ("Song 2", False, "import.track: disk full"),
    ]


async def test_tracks_of_no_album_are_ignored(tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    tracker = _tracker(tmp_path, publisher)
    await _completed(tracker, 1, album="")
    await _ready(tracker, 1)
    assert publisher.published == []
    assert tracker.in_progress() == []


async def test_an_album_half_imported_before_a_restart_completes_after_it(
    tmp_path: Path,
) -> None:
    first = _tracker(tmp_path, RecordingPublisher())
    await _completed(first, 1)
    await _completed(first, 2)
    await _ready(first, 1)
    publisher = RecordingPublisher()
    second = _tracker(tmp_path, publisher)  # reads the state file at its first event
    await _ready(second, 2)
    [(ready, _)] = publisher.published
    assert isinstance(ready, album_events_pb2.AlbumReady)
    assert [bool(t.path) for t in ready.tracks] == [True, True]
