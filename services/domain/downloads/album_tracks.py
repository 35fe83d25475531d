"""What every album downloader shares about an album's tracks: how their downloads are
named and marked, and what becomes of them after a restart.

An album track's download id is its album's id, then "#", the folder's attempt and the
track's place ("soulseek-album-1a2b#2.3"), so a module restarting mid-album can tell which of
its unfinished downloads belonged to an album. Each track's download.completed carries the
album's id and size as envelope attributes: the router counts an album's tracks by them and
publishes album.ready after the last one's pipeline run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from soulspot.events.v1 import album_pb2 as album_events_pb2
from soulspot.events.v1 import download_pb2 as download_events_pb2

if TYPE_CHECKING:
    from services.domain.downloads.registry import DownloadRecord, DownloadRegistry

__all__ = [
    "ALBUM_ID_ATTRIBUTE",
    "ALBUM_TRACKS_ATTRIBUTE",
    "album_attributes",
    "album_of",
    "fail_interrupted_albums",
    "track_download_id",
]

ALBUM_ID_ATTRIBUTE = "album_download_id"
ALBUM_TRACKS_ATTRIBUTE = "album_track_count"
_SEPARATOR = "#"
FailureKind = download_events_pb2.FailureKind


def track_download_id(album_id: str, attempt: int, index: int) -> str:
    """An album track's download id: the album's id, the folder's attempt, the track (from 1
    for index 0)."""
    return f"{album_id}{_SEPARATOR}{attempt}.{index + 1}"


def album_attributes(album_id: str, track_count: int) -> dict[str, str]:
    """The envelope attributes of an album track's download.completed: its album and size."""
    return {ALBUM_ID_ATTRIBUTE: album_id, ALBUM_TRACKS_ATTRIBUTE: str(track_count)}


def album_of(download_id: str) -> str | None:
    """The album a download belongs to, from its id (None: a single track)."""
    album_id, sep, _ = download_id.rpartition(_SEPARATOR)
    return album_id if sep and album_id else None


async def fail_interrupted_albums(
    registry: DownloadRegistry, records: list[DownloadRecord]
) -> list[DownloadRecord]:
    """After a restart: album tracks left unfinished fail (the task that fetched their folder
    is gone, and a folder is only ever taken whole), and album.failed goes out once per album.
    Returns the other records, single tracks, for the module to resume or fail."""
    singles: list[DownloadRecord] = []
    albums: dict[str, set[str]] = {}
    module = registry.module
    for record in records:
        album_id = album_of(record.download_id)
        if album_id is None:
            singles.append(record)
            continue
        albums.setdefault(album_id, set()).add(record.source)
        await registry.fail(
            record,
            f"interrupted by a restart of the {module} module: the album folder is given up",
            kind=FailureKind.FAILURE_KIND_TRANSFER_FAILED,
            can_retry=True,
        )
    for album_id, sources in albums.items():
        registry.announce(
            album_events_pb2.AlbumFailed(
                album_download_id=album_id,
                reason=(
                    f"interrupted by a restart of the {module} module while the album's "
                    "folder was being fetched; nothing of it reached the library. What to "
                    "do: ask for the album again"
                ),
                tried_sources=sorted(s for s in sources if s),
            ),
            album_id,
        )
    return singles
