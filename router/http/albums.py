"""The dashboard's albums in progress, folded from the album.* events in the log.

An album is in progress from album.requested until album.ready or album.failed; its stage
is what the last event said: searching, or downloading from a peer's folder (with the
attempt, when an earlier folder failed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from soulspot.events.v1 import album_pb2 as album_events_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable

    from soulspot.events.v1 import envelope_pb2

__all__ = ["ALBUM_EVENTS", "albums_in_progress"]

ALBUM_EVENTS = "album.*"
# The album payloads must be in the default pool for their Any payloads to unpack.
EVENT_CONTRACTS = (album_events_pb2,)


def _payload(envelope: envelope_pb2.EventEnvelope) -> dict[str, Any]:
    try:
        return json_format.MessageToDict(envelope.payload, preserving_proto_field_name=True)
    except (json_format.Error, TypeError, KeyError):
        return {}


def albums_in_progress(events: Iterable[envelope_pb2.EventEnvelope]) -> list[dict[str, Any]]:
    """The albums neither ready nor failed, oldest first, from album.* events in log order."""
    albums: dict[str, dict[str, Any]] = {}
    for envelope in events:
        payload = _payload(envelope)
        album_id = str(payload.get("album_download_id", ""))
        if not album_id:
            continue
        if envelope.event_type in ("album.ready", "album.failed"):
            albums.pop(album_id, None)
            continue
        entry = albums.setdefault(
            album_id,
            {"album_download_id": album_id, "stage": "searching", "source": "", "folder": ""},
        )
        entry["artist"] = payload.get("artist", entry.get("artist", ""))
        entry["album"] = payload.get("album", entry.get("album", ""))
        if envelope.event_type == "album.download_started":
            attempt = int(payload.get("attempt", 1))
            entry["stage"] = "downloading" + (f" (folder {attempt})" if attempt > 1 else "")
            entry["source"] = payload.get("source", "")
            entry["folder"] = payload.get("folder", "")
            entry["tracks"] = int(payload.get("track_count", 0))
    return list(albums.values())
