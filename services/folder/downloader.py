"""FolderDownloader: download.track by copying a matching file from a source folder (an
existing downloads folder, a NAS share) into the downloads folder, and the folders' health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from services.domain.audio.probe import file_reference, read_audio
from services.domain.downloads.album_tracks import fail_interrupted_albums
from services.domain.downloads.registry import DownloadRegistry, State
from services.folder.copier import copy_into
from services.folder.index import FolderIndex, Match
from services.kit.module.periodic import Periodic
from services.kit.rpc.errors import NotFound, Unavailable
from soulspot.capabilities.v1 import download_pb2
from soulspot.events.v1 import download_pb2 as download_events_pb2

if TYPE_CHECKING:
    from services.domain.downloads.registry import DownloadRecord
    from services.folder.settings import FolderSection
    from services.kit.module.runtime import ModuleRuntime

__all__ = ["FolderDownloader", "folder_problem"]

log = logging.getLogger("soulspot.folder")
FailureKind = download_events_pb2.FailureKind


def folder_problem(section: FolderSection) -> str | None:
    """Why the module cannot serve, or None when the folders are usable."""
    source = section.source_dir
    if source is None:
        return "no source folder configured: set SOULSPOT_FOLDER__SOURCE_DIR"
    if not source.is_dir():
        return f"source folder {source} does not exist or is not a folder"
    if not os.access(source, os.R_OK | os.X_OK):
        return f"source folder {source} is not readable"
    downloads = Path(section.downloads_dir)
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return f"downloads folder {downloads} cannot be created: {err}"
    if not os.access(downloads, os.W_OK | os.X_OK):
        return f"downloads folder {downloads} is not writable"
    return None


class FolderDownloader:
    def __init__(
        self,
        runtime: ModuleRuntime[FolderSection],
        section: FolderSection,
        registry: DownloadRegistry,
    ) -> None:
        self.runtime = runtime
        self.section = section
        self.registry = registry
        self.index = FolderIndex(section.source_dir or Path("."))
        self._scanned_at = 0.0
        self._scan_lock = asyncio.Lock()
        self._probe = Periodic("folder probe", section.probe_interval_s, self._probe_once)

    # -- health and index ------------------------------------------------------------------------

    async def check(self) -> bool:
        problem = await asyncio.to_thread(folder_problem, self.section)
        await self.runtime.set_health(problem is None, problem or "source folder readable")
        return problem is None

    async def refresh(self, *, force: bool = False) -> None:
        async with self._scan_lock:
            fresh = time.monotonic() - self._scanned_at < self.section.rescan_interval_s
            if fresh and not force:
                return
            read = await asyncio.to_thread(self.index.scan)
            self._scanned_at = time.monotonic()
            log.info(
                "source folder indexed",
                extra={"files": len(self.index.entries), "read": read},
            )

    async def _probe_once(self) -> None:
        if await self.check():
            await self.refresh()

    async def start(self) -> None:
        if await self.check():
            await self.refresh(force=True)
        self._probe.start()
        # A copy cut short by a restart left no finished file to pick up: say so, with the
        # same id the caller holds, so it can ask again.
        for record in await fail_interrupted_albums(self.registry, await self.registry.recover()):
            await self.registry.fail(
                record,
                "interrupted by a restart of the folder module before the copy finished",
                kind=FailureKind.FAILURE_KIND_TRANSFER_FAILED,
                can_retry=True,
            )

    async def stop(self) -> None:
        await self._probe.stop()
        await self.registry.shutdown()

    # -- downloads -------------------------------------------------------------------------------

    async def download(
        self, request: download_pb2.DownloadTrackRequest
    ) -> download_pb2.DownloadTrackResponse:
        if not await self.check():
            raise Unavailable(f"folder cannot download: {self.runtime.health_reason}")
        await self.refresh()
        quality = request.quality if request.HasField("quality") else None
        track = request.track
        result = self.index.match(
            track,
            tolerance_ms=(quality.duration_tolerance_ms if quality else 0)
            or round(self.section.duration_tolerance_s * 1000),
            allowed_versions=quality.allowed_versions if quality else (),
            require_lossless=bool(quality and quality.require_lossless),
            min_bitrate_kbps=quality.min_bitrate_kbps if quality else 0,
            preferred_formats=quality.preferred_formats if quality else (),
        )
        record = self.registry.new(track, request.requested_by)
        source = str(self.section.source_dir)
        record.source = source
        if not result.matches:
            reason = (
                f"no file in the source folder matches {track.artist} - {track.title}: "
                f"{result.explain()}"
            )
            record.tried_sources.append(source)
            await self.registry.fail(
                record, reason, kind=FailureKind.FAILURE_KIND_NOT_FOUND, can_retry=False
            )
            await self.registry.flush()
            raise NotFound(reason)
        best = result.matches[0]
        record.remote_filename = best.entry.relative
        record.tried_sources.append(source)
        record.state = State.DOWNLOAD_STATE_IN_PROGRESS
        self.registry.save(record)
        task = asyncio.create_task(self._copy(record, best), name=f"copy {record.download_id}")
        record.task = task
        # A local copy usually finishes at once: answer with the file then, else "in progress".
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), self.section.answer_within_s)
        await self.registry.flush()
        response = download_pb2.DownloadTrackResponse(
            download_id=record.download_id,
            state=record.state,
            source=source,
            remote_filename=record.remote_filename,
            candidates=len(result.matches),
        )
        if record.file is not None:
            response.file.CopyFrom(record.file)
        return response

    async def _copy(self, record: DownloadRecord, match: Match) -> None:
        facts = match.entry.facts
        try:
            await self.registry.started_event(record, attempt=1, expected_size=facts.size_bytes)
            target, checksum = await asyncio.to_thread(
                copy_into, facts.path, Path(self.section.downloads_dir), match.entry.relative
            )
            copied = await asyncio.to_thread(read_audio, target)
            file = file_reference(copied, checksum=checksum)
            await self.registry.progress(
                record,
                transferred=file.size_bytes,
                total=file.size_bytes,
                state_text="Copied",
                force=True,
            )
            await self.registry.complete(record, file)
        except asyncio.CancelledError:
            raise
        except OSError as err:
            await self.registry.fail(
                record,
                f"copying {match.entry.relative} failed: {err}",
                kind=FailureKind.FAILURE_KIND_TRANSFER_FAILED,
                can_retry=True,
            )
