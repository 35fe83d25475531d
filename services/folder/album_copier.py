"""download.album from the source folder: an album is a sub-folder whose files match the
album's track list (services.domain.album_matching, the same rules as for Soulseek folders).

The best matching sub-folder is copied whole into the downloads folder, then
download.completed goes out for each track, carrying the album's id; a copy that fails
deletes what it copied and the next matching sub-folder is tried. Only when none is left
is album.failed published; nothing of a failed folder reaches the pipeline or the library.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from services.domain.album_matching import (
    LOSSLESS_EXTENSIONS,
    FolderFile,
    FolderRules,
    FolderVerdict,
    score_folder,
)
from services.domain.audio.probe import file_reference, read_audio
from services.domain.audio_formats import format_extensions
from services.domain.downloads.album_jobs import AlbumJobs, expected_tracks, track_for
from services.domain.downloads.album_tracks import album_attributes
from services.domain.downloads.registry import State
from services.folder.copier import copy_into
from services.kit.rpc.errors import NotFound, Unavailable
from soulspot.capabilities.v1 import album_pb2

if TYPE_CHECKING:
    from services.domain.downloads.registry import DownloadRecord
    from services.folder.downloader import FolderDownloader
    from services.folder.index import Entry
    from soulspot.common.v1 import references_pb2

__all__ = ["FolderAlbumCopier", "folder_rules"]

log = logging.getLogger("soulspot.folder.album")

# What a request that requires lossless but names no lossless format gets, best first.
_LOSSLESS_FALLBACK = ("flac", "wav", "aiff", "aif")


def folder_rules(quality: references_pb2.QualityPolicy | None, tolerance_s: float) -> FolderRules:
    """The request's quality rules over the module's tolerance (no floor unless asked)."""
    if quality is None:
        return FolderRules(duration_tolerance_s=tolerance_s)
    allowed = format_extensions(quality.preferred_formats)
    if quality.require_lossless:
        allowed = tuple(e for e in allowed if e in LOSSLESS_EXTENSIONS) or _LOSSLESS_FALLBACK
    return FolderRules(
        allowed_formats=allowed,
        preferred_formats=allowed or ("flac", "mp3"),
        min_bitrate_kbps=quality.min_bitrate_kbps,
        prefer_lossless=quality.prefer_lossless or quality.require_lossless,
        duration_tolerance_s=(quality.duration_tolerance_ms / 1000) or tolerance_s,
        allowed_versions=frozenset(v.lower() for v in quality.allowed_versions),
    )


class FolderAlbumCopier:
    """download.album by copying a matching sub-folder of the source folder."""

    def __init__(self, downloader: FolderDownloader) -> None:
        self.downloader = downloader
        self.section = downloader.section
        self.registry = downloader.registry
        self.jobs = AlbumJobs(self.registry, log)

    async def start(
        self, request: album_pb2.DownloadAlbumRequest
    ) -> album_pb2.DownloadAlbumResponse:
        if not await self.downloader.check():
            raise Unavailable(f"folder cannot download: {self.downloader.runtime.health_reason}")
        await self.downloader.refresh()
        album_id = self.jobs.requested(request)
        expected = expected_tracks(request)
        rules = folder_rules(
            request.quality if request.HasField("quality") else None,
            self.section.duration_tolerance_s,
        )
        folders: dict[str, list[tuple[FolderFile, Entry]]] = {}
        for entry in self.downloader.index.entries.values():
            folder = str(Path(entry.relative).parent)
            shaped = FolderFile(
                entry.relative,
                duration_s=entry.facts.duration_ms / 1000 if entry.facts.duration_ms else None,
                bitrate_kbps=entry.facts.bitrate_kbps or None,
                tag_title=entry.facts.tag("title"),
            )
            folders.setdefault(folder, []).append((shaped, entry))
        accepted: list[tuple[FolderVerdict, list[Entry]]] = []
        rejected: list[str] = []
        for folder, pairs in sorted(folders.items()):
            # The album's own tags count as its name: a folder may be named anything locally.
            tag_album = pairs[0][1].facts.tag("album")
            verdict = score_folder(
                f"{folder} {tag_album}",
                [shaped for shaped, _ in pairs],
                [e for e, _ in expected],
                rules,
                album=request.album,
            )
            if not verdict.accepted:
                rejected.append(f"{folder}: {verdict.reason}")
                continue
            by_path = {shaped.path: entry for shaped, entry in pairs}
            verdict = dataclasses.replace(verdict, folder=folder)
            accepted.append((verdict, [by_path[f.path] for f in verdict.files]))
        accepted.sort(key=lambda c: -c[0].score)
        if not accepted:
            why = "; ".join(rejected[:3]) if rejected else "no audio in the source folder"
            reason = (
                f"no complete folder of {request.artist} - {request.album} in the source "
                f"folder: {why}. What to do: put the whole album in one sub-folder of "
                f"{self.section.source_dir}, or fetch the tracks one by one with `soulspot get`"
            )
            self.jobs.failed(album_id, request, reason, [])
            await self.registry.flush()
            raise NotFound(reason)
        references = {id(e): ref for e, ref in expected}
        task = self.jobs.spawn(album_id, self._run(album_id, request, accepted, references))
        # A local copy usually finishes at once: the answer then follows its events.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), self.section.answer_within_s)
        await self.registry.flush()
        best = accepted[0][0]
        return album_pb2.DownloadAlbumResponse(
            album_download_id=album_id,
            source=str(self.section.source_dir),
            folder=best.folder,
            track_count=len(best.files),
            candidates=len(accepted),
        )

    async def stop(self) -> None:
        await self.jobs.stop()

    async def _run(
        self,
        album_id: str,
        request: album_pb2.DownloadAlbumRequest,
        candidates: list[tuple[FolderVerdict, list[Entry]]],
        references: dict[int, references_pb2.TrackReference],
    ) -> None:
        tried: list[str] = []
        reasons: list[str] = []
        for attempt, (verdict, entries) in enumerate(candidates, 1):
            tried.append(verdict.folder)
            why = await self._copy(album_id, request, verdict, entries, references, attempt)
            if not why:
                return
            reasons.append(why)
        self.jobs.failed(
            album_id,
            request,
            f"every matching folder of {request.artist} - {request.album} failed to copy "
            f"({'; '.join(reasons)})",
            tried,
        )

    async def _copy(
        self,
        album_id: str,
        request: album_pb2.DownloadAlbumRequest,
        verdict: FolderVerdict,
        entries: list[Entry],
        references: dict[int, references_pb2.TrackReference],
        attempt: int,
    ) -> str:
        """Copy one folder whole: "" when every file was copied, else why (and the copies
        made are deleted)."""
        source = str(self.section.source_dir)
        self.jobs.download_started(
            album_id,
            request,
            source=source,
            folder=verdict.folder,
            track_count=len(entries),
            attempt=attempt,
        )
        records: list[DownloadRecord] = []
        files: list[references_pb2.FileReference] = []
        copied: list[Path] = []
        try:
            for index, entry in enumerate(entries):
                wanted = references.get(id(verdict.tracks[index]))
                record = await self.jobs.open_track(
                    album_id,
                    request,
                    attempt=attempt,
                    index=index,
                    track=track_for(request, verdict.files[index], wanted),
                    source=source,
                    remote_filename=entry.relative,
                    state=State.DOWNLOAD_STATE_IN_PROGRESS,
                    expected_size=entry.facts.size_bytes,
                )
                records.append(record)
                target, checksum = await asyncio.to_thread(
                    copy_into,
                    entry.facts.path,
                    Path(self.section.downloads_dir),
                    entry.relative,
                )
                copied.append(target)
                facts = await asyncio.to_thread(read_audio, target)
                files.append(file_reference(facts, checksum=checksum))
        except OSError as err:
            why = f"copying {verdict.folder} failed: {err}"
            for path in copied:
                with contextlib.suppress(OSError):
                    path.unlink()
            for record in records:
                await self.jobs.abandon_track(record, why)
            return why
        attributes = album_attributes(album_id, len(records))
        for record, file in zip(records, files, strict=True):
            await self.registry.complete(record, file, attributes=attributes)
        return ""
