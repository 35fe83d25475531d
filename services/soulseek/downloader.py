"""One Soulseek download from request to verified file, through slskd.

search (polled to completion) -> rank candidates -> enqueue the best -> follow the transfer
-> locate the file on disk and verify its size -> download.completed. A candidate that fails
(errored, rejected, stalled, vanished) is replaced by the next one, preferably from another
user, before download.failed is published with every source tried.

slskd keeps transferring while this module restarts: a download interrupted by a restart is
followed again (`resume`) when its transfer was already enqueued; should that transfer fail,
its ranked candidates, stored with it (services.soulseek.candidate_store), take over as they
would have without the restart. One still searching is failed with can_retry (search results
are not stored: a retry searches again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.domain.audio.probe import file_reference, read_audio
from services.domain.audio_formats import format_extensions
from services.domain.downloads.registry import DownloadRegistry, State
from services.domain.files import sha256_file
from services.domain.matching import clean_title, tokens
from services.kit.rpc.errors import NotFound, Unavailable
from services.soulseek import ranking
from services.soulseek.candidate_store import CandidatePlan
from services.soulseek.slskd_api import SlskdError, SlskdNotFoundError
from services.soulseek.transfer_state import parse_state, resolve_outcome
from soulspot.capabilities.v1 import download_pb2
from soulspot.events.v1 import download_pb2 as download_events_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from services.domain.downloads.registry import DownloadRecord
    from services.soulseek.candidate_store import CandidateStore
    from services.soulseek.settings import SoulseekSection
    from services.soulseek.slskd_api import SearchResult, SlskdClient, Transfer
    from soulspot.common.v1 import references_pb2

log = logging.getLogger("soulspot.soulseek")

FailureKind = download_events_pb2.FailureKind


@dataclass(frozen=True)
class Policy:
    """The ranking policy plus what ranking itself does not enforce."""

    ranking: ranking.QualityPolicy
    require_lossless: bool = False


def build_policy(section: SoulseekSection, quality: references_pb2.QualityPolicy | None) -> Policy:
    """The request's QualityPolicy over the module's defaults.

    A zero bitrate floor or tolerance in a request means "the module's default", not "none":
    a caller that only allows a live version must not silently lose the quality floor.
    """
    formats: tuple[str, ...] = tuple(f.lower() for f in section.preferred_formats)
    min_bitrate = section.min_bitrate_kbps
    prefer_lossless = section.prefer_lossless
    tolerance_s = section.duration_tolerance_s
    allowed: frozenset[str] = frozenset()
    require_lossless = False
    if quality is not None:
        if quality.preferred_formats:
            formats = format_extensions(quality.preferred_formats)
        min_bitrate = quality.min_bitrate_kbps or min_bitrate
        prefer_lossless = quality.prefer_lossless or quality.require_lossless
        if quality.duration_tolerance_ms:
            tolerance_s = quality.duration_tolerance_ms / 1000
        allowed = frozenset(v.lower() for v in quality.allowed_versions)
        require_lossless = quality.require_lossless
    only_preferred = bool(quality is not None and quality.preferred_formats)
    if require_lossless:
        lossless = tuple(f for f in formats if f in ranking.LOSSLESS_EXTENSIONS)
        formats = lossless or tuple(sorted(ranking.LOSSLESS_EXTENSIONS))
        only_preferred = True
    return Policy(
        ranking=ranking.QualityPolicy(
            preferred_formats=formats,
            min_bitrate_kbps=min_bitrate,
            prefer_lossless=prefer_lossless,
            duration_tolerance_s=tolerance_s,
            allowed_versions=allowed,
            only_preferred_formats=only_preferred,
        ),
        require_lossless=require_lossless,
    )


def search_query(track: references_pb2.TrackReference) -> str:
    """What to ask the network: artist and title words, no punctuation or decorations.

    Soulseek matches every word, so a "(feat. X)" or "- Remastered 2011" would only lose hits.
    """
    words = tokens(track.artist) + tokens(clean_title(track.title))
    return " ".join(dict.fromkeys(words))


class SoulseekDownloader:
    def __init__(
        self,
        client: SlskdClient,
        section: SoulseekSection,
        registry: DownloadRegistry,
        plans: CandidateStore | None = None,
    ) -> None:
        self.client = client
        self.section = section
        self.registry = registry
        # None: the candidates live in memory only (a restart ends a failed transfer's download).
        self.plans = plans

    @property
    def downloads_dir(self) -> Path:
        return Path(self.section.downloads_dir)

    async def search(self, query: str) -> SearchResult:
        """Search the network within the module's limits (wait, poll, slskd's own timeout)."""
        return await self.client.search(
            query,
            max_wait_s=self.section.search_max_wait_s,
            poll_interval_s=self.section.poll_interval_s,
            search_timeout_ms=int(self.section.search_timeout_s * 1000),
        )

    # -- the request path ------------------------------------------------------------------------

    async def start(
        self, request: download_pb2.DownloadTrackRequest
    ) -> download_pb2.DownloadTrackResponse:
        """Search, rank and enqueue; answer once a transfer is under way. The rest runs in a
        background task. Raises NotFound when no candidate is acceptable, Unavailable when
        slskd cannot be used."""
        track = request.track
        policy = build_policy(
            self.section, request.quality if request.HasField("quality") else None
        )
        active = self.registry.find_active(track, request.requested_by)
        if active is not None:
            log.info("already downloading", extra={"download_id": active.download_id})
            return download_pb2.DownloadTrackResponse(
                download_id=active.download_id,
                state=active.state,  # type: ignore[arg-type]
                source=active.source,
                remote_filename=active.remote_filename,
            )
        record = self.registry.new(track, request.requested_by)
        query = search_query(track)
        log.info("searching", extra={"download_id": record.download_id, "query": query})
        try:
            result = await self.search(query)
        except SlskdError as err:
            reason = f"slskd search failed: {err}"
            await self.registry.fail(
                record,
                reason,
                kind=FailureKind.FAILURE_KIND_BACKEND_UNAVAILABLE,
                can_retry=True,
            )
            await self.registry.flush()
            raise Unavailable(reason) from err
        ranked = ranking.rank_candidates(
            ranking.TrackRequest(
                title=track.title,
                artist=track.artist,
                album=track.album or None,
                duration_ms=track.duration_ms or None,
            ),
            result.responses,
            policy.ranking,
        )
        candidates = [
            c
            for c in ranked.accepted
            if not policy.require_lossless or _ext(c) in ranking.LOSSLESS_EXTENSIONS
        ][: max(1, self.section.max_attempts)]
        if not candidates:
            kind = (
                FailureKind.FAILURE_KIND_NO_ACCEPTABLE_CANDIDATE
                if ranked.rejected
                else FailureKind.FAILURE_KIND_NOT_FOUND
            )
            reason = f"no acceptable Soulseek candidate for {query!r}: {ranked.explain()}"
            examples = sorted({r.reason for r in ranked.rejected})[:3]
            if examples:
                reason += f" (e.g. {'; '.join(examples)})"
            await self.registry.fail(record, reason, kind=kind, can_retry=True)
            await self.registry.flush()
            raise NotFound(reason)
        log.info(
            "candidates ranked",
            extra={
                "download_id": record.download_id,
                "accepted": len(ranked.accepted),
                "rejected": len(ranked.rejected),
                "best": candidates[0].file.filename,
            },
        )
        plan = CandidatePlan(candidates)
        index = await self._enqueue_next(record, plan)
        if index is None:
            reason = (
                f"every one of {len(plan.tried)} candidates refused the download: {record.error}"
            )
            await self.registry.fail(
                record, reason, kind=FailureKind.FAILURE_KIND_TRANSFER_FAILED, can_retry=True
            )
            await self.registry.flush()
            raise Unavailable(reason)
        record.task = asyncio.create_task(
            self._follow(record, plan), name=f"download {record.download_id}"
        )
        return download_pb2.DownloadTrackResponse(
            download_id=record.download_id,
            state=State.DOWNLOAD_STATE_QUEUED,
            source=record.source,
            remote_filename=record.remote_filename,
            candidates=len(ranked.accepted),
        )

    async def _enqueue_next(self, record: DownloadRecord, plan: CandidatePlan) -> int | None:
        """Enqueue the next candidate slskd accepts; its index, or None when none is left."""
        while (index := plan.next_index()) is not None:
            plan.tried.add(index)
            candidate = plan.candidates[index]
            record.tried_sources.append(candidate.username)
            try:
                await self.client.enqueue(candidate.username, [candidate.file])
            except SlskdError as err:
                record.error = f"{candidate.username}: enqueue refused: {err}"
                plan.failed_users.add(candidate.username)
                log.warning(
                    "enqueue refused, trying the next candidate",
                    extra={"download_id": record.download_id, "error": str(err)},
                )
                continue
            record.source = candidate.username
            record.remote_filename = candidate.file.filename
            record.state = State.DOWNLOAD_STATE_QUEUED
            record.percent = 0.0
            record.expected_size = candidate.file.size
            plan.attempt += 1
            # Stored before anything else: a restart from here on finds the transfer again,
            # and the candidates that follow it. The plan goes first: a crash between the two
            # writes can only make it skip this candidate after a restart, never repeat one.
            if self.plans is not None:
                self.plans.save(record.download_id, plan)
            self.registry.save(record)
            return index
        return None

    # -- the background part ---------------------------------------------------------------------

    async def _follow(
        self, record: DownloadRecord, plan: CandidatePlan, *, resumed: bool = False
    ) -> None:
        """Follow the record's transfer to its end; one that fails is replaced by the plan's
        next candidate until none is left. `resumed`: the transfer was started, and
        download.started sent, by the run before a restart."""
        try:
            async with self._guarded(record, "resumed download" if resumed else "download task"):
                announce = not resumed
                while True:
                    if announce:
                        await self.registry.started_event(
                            record, attempt=plan.attempt, expected_size=record.expected_size
                        )
                    path, reason = await self._watch(
                        record, record.source, record.remote_filename, record.expected_size
                    )
                    if path is not None:
                        file = await asyncio.to_thread(_describe, path)
                        await self.registry.complete(record, file)
                        return
                    note = "" if announce else " (followed again after a restart)"
                    plan.reasons.append(f"{record.source}: {reason}{note}")
                    plan.failed_users.add(record.source)
                    announce = True
                    log.warning(
                        "candidate failed, trying the next one",
                        extra={"download_id": record.download_id, "reason": reason},
                    )
                    if await self._enqueue_next(record, plan) is None:
                        break
                reasons = "; ".join(plan.reasons)
                await self.registry.fail(
                    record,
                    # Without candidates (none stored for it) only the followed one was known.
                    f"all {len(record.tried_sources)} candidates failed: {reasons}"
                    if plan.candidates
                    else reasons,
                    kind=FailureKind.FAILURE_KIND_TRANSFER_FAILED,
                    can_retry=True,
                )
        finally:
            # A cancel asked by a caller ends the download once this task is gone.
            if self.plans is not None and (record.terminal or record.cancel_requested):
                self.plans.forget(record.download_id)

    @contextlib.asynccontextmanager
    async def _guarded(self, record: DownloadRecord, what: str) -> AsyncIterator[None]:
        """A download's background work: a cancel asked by the caller reaches slskd too, and
        a crash becomes download.failed (can_retry) instead of a download left hanging."""
        try:
            yield
        except asyncio.CancelledError:
            if record.cancel_requested:
                await self._cancel_remote(record)
            raise
        except Exception as err:
            log.exception("%s crashed", what, extra={"download_id": record.download_id})
            await self.registry.fail(
                record,
                f"internal error while downloading: {err}",
                kind=FailureKind.FAILURE_KIND_TRANSFER_FAILED,
                can_retry=True,
            )

    async def _cancel_remote(self, record: DownloadRecord) -> None:
        with contextlib.suppress(SlskdError):
            transfer = await self.client.find_download(record.source, record.remote_filename)
            if transfer is not None:
                await self.client.cancel(record.source, transfer.id)

    # -- after a restart ---------------------------------------------------------------------

    async def resume(self, records: list[DownloadRecord]) -> None:
        """Take over the downloads a previous run left unfinished."""
        for record in records:
            if record.state == State.DOWNLOAD_STATE_SEARCHING or not (
                record.source and record.remote_filename
            ):
                # Nothing was enqueued at slskd: there is no transfer to follow.
                await self.registry.fail(
                    record,
                    "interrupted by a restart of the soulseek module before a transfer started",
                    kind=FailureKind.FAILURE_KIND_TRANSFER_FAILED,
                    can_retry=True,
                )
                continue
            stored = self.plans.load(record.download_id) if self.plans is not None else None
            plan = stored if stored is not None else CandidatePlan([])
            log.info(
                "resuming download",
                extra={
                    "download_id": record.download_id,
                    "source": record.source,
                    "candidates_left": len(plan.candidates) - len(plan.tried),
                },
            )
            record.task = asyncio.create_task(
                self._follow(record, plan, resumed=True), name=f"download {record.download_id}"
            )
        if self.plans is not None:
            # Plans left by downloads that ended without their task seeing it (a cancel during
            # a shutdown, a crash) are of no further use.
            self.plans.retain(
                r.download_id for r in self.registry.records.values() if not r.terminal
            )

    async def _watch(
        self, record: DownloadRecord, username: str, filename: str, size: int
    ) -> tuple[Path | None, str]:
        """Follow one transfer to its end: (the verified file, "") or (None, why it failed)."""
        expected = size or None
        last_change = time.monotonic()
        last_bytes = -1
        last_state = ""
        missing_polls = 0
        while True:
            transfer: Transfer | None = None
            try:
                transfer = await self.client.find_download(username, filename)
            except SlskdError as err:
                # slskd away for a moment: the transfer goes on without us; keep looking.
                log.warning(
                    "cannot read the transfer state",
                    extra={"download_id": record.download_id, "error": str(err)},
                )
            state = transfer.state if transfer is not None else parse_state("")
            outcome = await asyncio.to_thread(
                resolve_outcome, state, self.downloads_dir, filename, expected
            )
            if outcome.arrived and outcome.path is not None:
                if outcome.reason not in ("completed", "file on disk"):
                    log.warning(
                        "slskd reported a failure but the file arrived",
                        extra={"download_id": record.download_id, "note": outcome.reason},
                    )
                return outcome.path, ""
            if transfer is None:
                missing_polls += 1
                if missing_polls >= 3:
                    return None, "the transfer disappeared from slskd"
            else:
                missing_polls = 0
                if state.is_terminal:
                    detail = f" ({transfer.exception})" if transfer.exception else ""
                    return None, f"{outcome.reason}{detail}"
                now = (
                    State.DOWNLOAD_STATE_IN_PROGRESS
                    if state.in_progress
                    else State.DOWNLOAD_STATE_QUEUED
                )
                if now != record.state:
                    record.state = now
                    self.registry.save(record)
                if transfer.bytes_transferred != last_bytes or transfer.state_text != last_state:
                    last_change = time.monotonic()
                    last_bytes = transfer.bytes_transferred
                    last_state = transfer.state_text
                await self.registry.progress(
                    record,
                    transferred=transfer.bytes_transferred,
                    total=transfer.size or size,
                    bytes_per_second=transfer.average_speed,
                    state_text=transfer.state_text,
                )
            if time.monotonic() - last_change > self.section.stall_timeout_s:
                if transfer is not None:
                    with contextlib.suppress(SlskdError, SlskdNotFoundError):
                        await self.client.cancel(username, transfer.id)
                return None, f"no progress for {self.section.stall_timeout_s:g}s"
            await asyncio.sleep(self.section.poll_interval_s)


def _ext(candidate: ranking.RankedCandidate) -> str:
    return candidate.file.extension or candidate.file.filename.rsplit(".", 1)[-1].lower()


def _describe(path: Path) -> references_pb2.FileReference:
    """The FileReference of a downloaded file: properties from its headers, sha256."""
    return file_reference(read_audio(path), checksum=sha256_file(path))
