"""Tests of the dashboard's albums in progress, folded from album.* events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.http.albums import albums_in_progress
from soulspot.events.v1 import album_pb2 as album_events_pb2
from soulspot.events.v1 import envelope_pb2

if TYPE_CHECKING:
    from google.protobuf.message import Message


def _envelope(event_type: str, payload: Message) -> envelope_pb2.EventEnvelope:
    envelope = envelope_pb2.EventEnvelope(event_type=event_type)
    envelope.payload.Pack(payload)
    return envelope


def test_an_album_is_in_progress_until_ready_or_failed_with_its_latest_stage() -> None:
    events = [
        _envelope(
            "album.requested",
            album_events_pb2.AlbumRequested(album_download_id="a1", artist="A", album="One"),
        ),
        _envelope(
            "album.requested",
            album_events_pb2.AlbumRequested(album_download_id="a2", artist="B", album="Two"),
        ),
        _envelope(
            "album.download_started",
            album_events_pb2.AlbumDownloadStarted(
                album_download_id="a1", source="carol", folder="Music\\One", attempt=2
            ),
        ),
        _envelope(
            "album.failed",
            album_events_pb2.AlbumFailed(album_download_id="a2", reason="no complete folder"),
        ),
    ]
    [album] = albums_in_progress(events)
    assert album["album_download_id"] == "a1"
    assert album["artist"] == "A"
    assert album["stage"] == "downloading (folder 2)"
    assert album["source"] == "carol"
    events.append(_envelope("album.ready", album_events_pb2.AlbumReady(album_download_id="a1")))
    assert albums_in_progress(events) == []
