"""What every album downloader does the same way around fetching a folder: the album's
events, its tracks' records, and the background tasks that fetch its folders.

A downloader (Soulseek's, the source folder's) only finds and fetches folders; announcing
album.requested, album.download_started and album.failed, opening a download record per track
of a folder, giving a folder's tracks up whole, and cancelling the fetches at shutdown are
done here, so both speak the same events with the same fields.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from services.domain.album_matching import ExpectedTrack, FolderFile
from services.domain.downloads.album_tracks import track_download_id
from services.kit.support.tasks import cancel_all
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import album_pb2 as album_events_pb2
from soulspot.events.v1 import download_pb2 as download_events_pb2

if TYPE_CHECKING:
    import logging
    from collections.abc import Coroutine

    from services.domain.downloads.registry import DownloadRecord, DownloadRegistry
    from soulspot.capabilities.v1 import album_pb2

__all__ = ["AlbumJobs", "expected_tracks", "track_for"]

FailureKind = download_events_pb2.FailureKind


def expected_tracks(
    request: album_pb2.DownloadAlbumRequest,
) -> list[tuple[ExpectedTrack, references_pb2.TrackReference]]:
    """The request's track list, each entry with the reference it came from."""
    return [
        (
            ExpectedTrack(
                title=track.title,
                position=track.track_number or index + 1,
                duration_s=track.duration_ms / 1000 if track.duration_ms else None,
            ),
            track,
        )
        for index, track in enumerate(request.tracks)
    ]


def track_for(
    request: album_pb2.DownloadAlbumRequest,
    shaped: FolderFile,
    wanted: references_pb2.TrackReference | None,
) -> references_pb2.TrackReference:
    """The track a file stands for: the requested one, else what its tags or name say."""
    track = references_pb2.TrackReference()
    if wanted is not None:
        track.CopyFrom(wanted)
    else:
        track.title = shaped.title
        track.track_number = shaped.number or 0
    track.artist = track.artist or request.artist
    track.album = track.album or request.album
    return track


class AlbumJobs:
    """One downloader's albums: their events, their tracks' records and their fetch tasks."""

    def __init__(self, registry: DownloadRegistry, log: logging.Logger) -> None:
        self.registry = registry
        self.log = log
        self._tasks: set[asyncio.Task[None]] = set()

    def requested(self, request: album_pb2.DownloadAlbumRequest) -> str:
        """A new album's id, once album.requested is announced for it."""
        album_id = f"{self.registry.module}-album-{uuid.uuid4().hex[:16]}"
        self.registry.announce(
            album_events_pb2.AlbumRequested(
                album_download_id=album_id,
                artist=request.artist,
                album=request.album,
                expected_tracks=len(request.tracks),
                requested_by=request.requested_by,
            ),
            album_id,
        )
        return album_id

    def download_started(
        self,
        album_id: str,
        request: album_pb2.DownloadAlbumRequest,
        *,
        source: str,
        folder: str,
        track_count: int,
        attempt: int,
    ) -> None:
        """Announce album.download_started for one folder's attempt."""
        self.registry.announce(
            album_events_pb2.AlbumDownloadStarted(
                album_download_id=album_id,
                source=source,
                folder=folder,
                track_count=track_count,
                attempt=attempt,
                artist=request.artist,
                album=request.album,
            ),
            album_id,
        )

    def failed(
        self,
        album_id: str,
        request: album_pb2.DownloadAlbumRequest,
        reason: str,
        tried: list[str],
    ) -> None:
        """Announce album.failed (the caller flushes when it must be out before it answers)."""
        self.log.warning("album failed", extra={"album_download_id": album_id, "reason": reason})
        self.registry.announce(
            album_events_pb2.AlbumFailed(
                album_download_id=album_id,
                reason=reason,
                tried_sources=tried,
                artist=request.artist,
                album=request.album,
            ),
            album_id,
        )

    async def open_track(
        self,
        album_id: str,
        request: album_pb2.DownloadAlbumRequest,
        *,
        attempt: int,
        index: int,
        track: references_pb2.TrackReference,
        source: str,
        remote_filename: str,
        state: int,
        expected_size: int,
    ) -> DownloadRecord:
        """The record of one track of a folder, saved, its download.started announced."""
        record = self.registry.new(
            track,
            request.requested_by,
            download_id=track_download_id(album_id, attempt, index),
        )
        record.source = source
        record.remote_filename = remote_filename
        record.tried_sources.append(source)
        record.state = state
        self.registry.save(record)
        await self.registry.started_event(record, attempt=attempt, expected_size=expected_size)
        return record

    async def abandon_track(self, record: DownloadRecord, why: str) -> None:
        """Fail one track of a folder given up whole (a retry may fetch it again)."""
        await self.registry.fail(
            record,
            f"album folder abandoned: {why}",
            kind=FailureKind.FAILURE_KIND_TRANSFER_FAILED,
            can_retry=True,
        )

    def spawn(self, album_id: str, fetch: Coroutine[object, object, None]) -> asyncio.Task[None]:
        """Run an album's fetch in the background, kept until it ends or stop() cancels it."""
        task = asyncio.create_task(fetch, name=f"album {album_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        """Cancel every running fetch and wait for each to end."""
        await cancel_all(self._tasks)
