"""Album progress in the pipeline's JetStream KV: a router that takes the album consumer over
from another goes on with the albums that router had in progress, and publishes album.ready
after their last track."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from router.pipeline.albums import (
    ALBUM_ID_ATTRIBUTE,
    ALBUM_TRACKS_ATTRIBUTE,
    AlbumTracker,
    KvAlbumState,
)
from router.pipeline.kv_store import KvRunStore
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import album_pb2 as album_events_pb2
from soulspot.events.v1 import download_pb2 as download_events_pb2
from soulspot.events.v1 import envelope_pb2
from soulspot.events.v1 import track_pb2 as track_events_pb2

if TYPE_CHECKING:
    from pathlib import Path

    import grpc

    from router.pipeline.publish import RunPublisher
    from tests.helpers.nats_server import NatsServerProcess


class RecordingPublisher:
    """Keeps what a tracker publishes."""

    def __init__(self) -> None:
        self.published: list[tuple[Any, str]] = []

    async def publish(self, payload: Any, *, event_id: str, **_: Any) -> None:
        self.published.append((payload, event_id))


async def _completed(tracker: AlbumTracker, n: int) -> None:
    """Track n of a two-track album downloaded (its run starts)."""
    event = download_events_pb2.DownloadCompleted(
        download_id=f"d{n}",
        track=references_pb2.TrackReference(
            title=f"Song {n}", artist="Artist", album="Album", track_number=n
        ),
        source="carol",
    )
    attributes = {ALBUM_ID_ATTRIBUTE: "album-1", ALBUM_TRACKS_ATTRIBUTE: "2"}
    await tracker._on_completed(event, envelope_pb2.EventEnvelope(attributes=attributes))


async def _ready(tracker: AlbumTracker, n: int) -> None:
    event = track_events_pb2.TrackReady(download_id=f"d{n}")
    event.file.path = f"/library/Artist/Album/0{n} - Song {n}.flac"
    await tracker._on_ready(event, envelope_pb2.EventEnvelope())


def _tracker(state_dir: Path, publisher: RecordingPublisher, store: KvRunStore) -> AlbumTracker:
    return AlbumTracker(
        cast("grpc.aio.Channel", None),
        cast("RunPublisher", publisher),
        state_dir,
        consumer="test-albums",
        state=KvAlbumState(store.kv),
    )


async def test_the_router_taking_the_album_consumer_over_finishes_the_album(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    stores = [KvRunStore([nats_server.url]) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        first_out, second_out = RecordingPublisher(), RecordingPublisher()
        first = _tracker(tmp_path / "a", first_out, stores[0])
        second = _tracker(tmp_path / "b", second_out, stores[1])
        await second._refresh()  # started before the first router had any album
        await _completed(first, 1)
        await _completed(first, 2)
        await _ready(first, 1)
        # The first router goes; the second serves the album consumer from here on.
        await _ready(second, 2)
        assert first_out.published == []
        [(ready, _)] = second_out.published
        assert isinstance(ready, album_events_pb2.AlbumReady)
        assert [bool(t.path) for t in ready.tracks] == [True, True]
        assert second.in_progress() == []
    finally:
        for store in stores:
            await store.close()
