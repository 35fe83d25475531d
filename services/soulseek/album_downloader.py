"""One Soulseek album download: the whole album folder from one peer, through slskd.

search "artist album" -> group the results by peer and folder -> score each folder against
the track list (services.domain.album_matching: count, titles, durations, one format, the
quality floor) -> enqueue the best folder's files at once -> follow every transfer (the
single-track downloader's per-file watch) -> download.completed per track, each carrying the
album's id. A folder with a failed file is abandoned as a whole: its transfers still running
are cancelled, its files that arrived are deleted from the downloads folder, and the next
folder (preferring another peer) is tried. Only when every complete folder failed is
album.failed published; nothing of a failed folder ever reaches the pipeline or the library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.domain.album_matching import (
    ExpectedTrack,
    FolderFile,
    FolderRules,
    FolderVerdict,
    group_by_folder,
    score_folder,
)
from services.domain.downloads.album_jobs import AlbumJobs, expected_tracks, track_for
from services.domain.downloads.album_tracks import album_attributes
from services.domain.downloads.registry import State
from services.domain.matching import clean_title, tokens
from services.kit.rpc.errors import NotFound, Unavailable
from services.kit.support.tasks import cancel_and_wait
from services.soulseek.downloader import _describe, build_policy
from services.soulseek.slskd_api import SlskdError
from soulspot.capabilities.v1 import album_pb2

if TYPE_CHECKING:
    from pathlib import Path

    from services.domain.downloads.registry import DownloadRecord
    from services.soulseek.downloader import SoulseekDownloader
    from services.soulseek.slskd_api import CandidateFile, SearchResponse
    from soulspot.common.v1 import references_pb2

__all__ = ["SoulseekAlbumDownloader", "album_query", "rank_folders"]

log = logging.getLogger("soulspot.soulseek.album")

WHAT_TO_DO = (
    "try again later (peers come and go), relax the quality floor, or fetch the tracks one "
    "by one with `soulspot get`"
)


@dataclass(frozen=True)
class FolderCandidate:
    """A complete folder at one peer, and the slskd files to enqueue for it, in album order."""

    username: str
    verdict: FolderVerdict
    files: tuple[CandidateFile, ...]
    score: float


def album_query(artist: str, album: str) -> str:
    """What to ask the network: the artist's and album's words, once each."""
    return " ".join(dict.fromkeys(tokens(artist) + tokens(clean_title(album))))


def rank_folders(
    responses: list[SearchResponse],
    expected: list[ExpectedTrack],
    rules: FolderRules,
    album: str,
) -> tuple[list[FolderCandidate], list[str]]:
    """Every complete folder, best first (folder score plus the peer's slot, queue and speed),
    and why each other folder was not."""
    accepted: list[FolderCandidate] = []
    rejected: list[str] = []
    for response in responses:
        by_path = {f.filename: f for f in response.files if not f.is_locked}
        shaped = [
            FolderFile(f.filename, duration_s=f.length_s, bitrate_kbps=_bitrate(f))
            for f in by_path.values()
        ]
        for folder, files in group_by_folder(shaped).items():
            verdict = score_folder(folder, files, expected, rules, album=album)
            if not verdict.accepted:
                rejected.append(f"{response.username}:{folder}: {verdict.reason}")
                continue
            peer = 10.0 if response.has_free_upload_slot else 0.0
            peer -= 10.0 * min(response.queue_length, 50) / 50
            peer += 5.0 * min(response.upload_speed, 5_000_000) / 5_000_000
            accepted.append(
                FolderCandidate(
                    username=response.username,
                    verdict=verdict,
                    files=tuple(by_path[f.path] for f in verdict.files),
                    score=verdict.score + peer,
                )
            )
    accepted.sort(key=lambda c: (-c.score, c.username, c.verdict.folder))
    return accepted, rejected


def _bitrate(file: CandidateFile) -> int | None:
    if file.bit_rate:
        return file.bit_rate
    if file.size and file.length_s:
        return int(file.size * 8 / file.length_s / 1000)
    return None


class SoulseekAlbumDownloader:
    """download.album through slskd, on the single-track downloader's client and registry."""

    def __init__(self, tracks: SoulseekDownloader) -> None:
        self.tracks = tracks
        self.client = tracks.client
        self.section = tracks.section
        self.registry = tracks.registry
        self.jobs = AlbumJobs(self.registry, log)

    async def start(
        self, request: album_pb2.DownloadAlbumRequest
    ) -> album_pb2.DownloadAlbumResponse:
        """Search and pick the folders; answer once the best one is being fetched. Raises
        NotFound when no complete folder exists, Unavailable when slskd cannot be used."""
        album_id = self.jobs.requested(request)
        policy = build_policy(
            self.section, request.quality if request.HasField("quality") else None
        ).ranking
        rules = FolderRules(
            allowed_formats=policy.preferred_formats if policy.only_preferred_formats else (),
            preferred_formats=policy.preferred_formats,
            min_bitrate_kbps=policy.min_bitrate_kbps,
            prefer_lossless=policy.prefer_lossless,
            duration_tolerance_s=policy.duration_tolerance_s,
            allowed_versions=policy.allowed_versions,
        )
        expected = expected_tracks(request)
        query = album_query(request.artist, request.album)
        log.info("searching for an album", extra={"album_download_id": album_id, "query": query})
        try:
            result = await self.tracks.search(query)
        except SlskdError as err:
            reason = f"slskd search failed: {err}"
            await self._failed(album_id, request, reason, [])
            raise Unavailable(reason) from err
        candidates, rejected = rank_folders(
            list(result.responses), [e for e, _ in expected], rules, request.album
        )
        if not candidates:
            shape = (
                f"{len(expected)} tracks" if expected else "no track list: judged by folder shape"
            )
            why = "; ".join(rejected[:3]) if rejected else "no search results"
            reason = (
                f"no complete folder of {request.artist} - {request.album} ({shape}) on "
                f"Soulseek: {why}. What to do: {WHAT_TO_DO}"
            )
            await self._failed(album_id, request, reason, [])
            raise NotFound(reason)
        best = candidates[0]
        self.jobs.spawn(
            album_id,
            self._run(album_id, request, expected, candidates[: max(1, self.section.max_attempts)]),
        )
        return album_pb2.DownloadAlbumResponse(
            album_download_id=album_id,
            source=best.username,
            folder=best.verdict.folder,
            track_count=len(best.files),
            candidates=len(candidates),
        )

    async def stop(self) -> None:
        await self.jobs.stop()

    async def _failed(
        self,
        album_id: str,
        request: album_pb2.DownloadAlbumRequest,
        reason: str,
        tried: list[str],
    ) -> None:
        self.jobs.failed(album_id, request, reason, tried)
        await self.registry.flush()

    async def _run(
        self,
        album_id: str,
        request: album_pb2.DownloadAlbumRequest,
        expected: list[tuple[ExpectedTrack, references_pb2.TrackReference]],
        candidates: list[FolderCandidate],
    ) -> None:
        """Fetch the folders in turn, another peer's first, until one arrives whole."""
        tried: list[str] = []
        reasons: list[str] = []
        failed_users: set[str] = set()
        remaining = list(candidates)
        try:
            while remaining:
                fresh = [c for c in remaining if c.username not in failed_users]
                candidate = (fresh or remaining)[0]
                remaining.remove(candidate)
                tried.append(f"{candidate.username}:{candidate.verdict.folder}")
                why = await self._fetch(album_id, request, expected, candidate, len(tried))
                if not why:
                    return
                reasons.append(f"{candidate.username}: {why}")
                failed_users.add(candidate.username)
                log.warning(
                    "album folder failed, trying the next one",
                    extra={"album_download_id": album_id, "reason": why},
                )
            await self._failed(
                album_id,
                request,
                f"every complete folder of {request.artist} - {request.album} failed "
                f"({'; '.join(reasons)}). What to do: {WHAT_TO_DO}",
                tried,
            )
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.exception("album download crashed", extra={"album_download_id": album_id})
            await self._failed(album_id, request, f"internal error: {err}", tried)

    async def _fetch(
        self,
        album_id: str,
        request: album_pb2.DownloadAlbumRequest,
        expected: list[tuple[ExpectedTrack, references_pb2.TrackReference]],
        candidate: FolderCandidate,
        attempt: int,
    ) -> str:
        """Fetch one folder whole: "" when every file arrived (and download.completed went
        out for each), else why not (and nothing of it is left in the downloads folder)."""
        references = {id(e): ref for e, ref in expected}
        self.jobs.download_started(
            album_id,
            request,
            source=candidate.username,
            folder=candidate.verdict.folder,
            track_count=len(candidate.files),
            attempt=attempt,
        )
        try:
            await self.client.enqueue(candidate.username, list(candidate.files))
        except SlskdError as err:
            return f"enqueue refused: {err}"
        records: list[DownloadRecord] = []
        for index, file in enumerate(candidate.files):
            wanted = candidate.verdict.tracks[index]
            record = await self.jobs.open_track(
                album_id,
                request,
                attempt=attempt,
                index=index,
                track=track_for(request, FolderFile(file.filename), references.get(id(wanted))),
                source=candidate.username,
                remote_filename=file.filename,
                state=State.DOWNLOAD_STATE_QUEUED,
                expected_size=file.size,
            )
            records.append(record)
        watches = {
            asyncio.create_task(
                self.tracks._watch(record, candidate.username, file.filename, file.size)
            ): record
            for record, file in zip(records, candidate.files, strict=True)
        }
        arrived: dict[str, Path] = {}
        why = ""
        pending = set(watches)
        try:
            while pending and not why:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    record = watches[task]
                    path, reason = task.result()
                    if path is None:
                        why = why or f"{record.remote_filename}: {reason}"
                    else:
                        arrived[record.download_id] = path
        finally:
            for task in pending:
                await cancel_and_wait(task)
        if why:
            await self._abandon(records, arrived, why)
            return why
        for record in records:
            file_ref = await asyncio.to_thread(_describe, arrived[record.download_id])
            await self.registry.complete(
                record, file_ref, attributes=album_attributes(album_id, len(records))
            )
        await self.registry.flush()
        return ""

    async def _abandon(
        self, records: list[DownloadRecord], arrived: dict[str, Path], why: str
    ) -> None:
        """Give a folder up whole: cancel what still transfers, delete what arrived."""
        for record in records:
            if record.download_id in arrived:
                with contextlib.suppress(OSError):
                    arrived[record.download_id].unlink()
            else:
                await self.tracks._cancel_remote(record)
            await self.jobs.abandon_track(record, why)
