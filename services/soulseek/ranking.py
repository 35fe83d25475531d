"""Rank Soulseek search results for one requested track.

Pure functions. Answers two complaints about similar tools: the wrong version gets picked
(live, remix, karaoke...) and there is no quality floor. Every rejected file carries a
human-readable reason, so the caller can say why nothing matched instead of "no results".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.domain.album_matching import AUDIO_EXTENSIONS, LOSSLESS_EXTENSIONS
from services.domain.matching import (
    VERSION_PATTERNS,
    clean_title,
    coverage,
    detect_versions,
    tokens,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from services.soulseek.slskd_api import CandidateFile, SearchResponse

__all__ = [
    "AUDIO_EXTENSIONS",
    "LOSSLESS_EXTENSIONS",
    "VERSION_PATTERNS",
    "QualityPolicy",
    "RankedCandidate",
    "RankingResult",
    "Rejection",
    "TrackRequest",
    "detect_versions",
    "evaluate",
    "rank_candidates",
    "tokens",
]


# The text matching (tokens, version words, title decorations) is shared with every module
# that compares a request with a found file: it lives in services.domain.matching.


@dataclass(frozen=True)
class TrackRequest:
    title: str
    artist: str
    album: str | None = None
    duration_ms: int | None = None


@dataclass(frozen=True)
class QualityPolicy:
    preferred_formats: tuple[str, ...] = ("flac", "mp3")
    min_bitrate_kbps: int = 192
    prefer_lossless: bool = True
    duration_tolerance_s: float = 5.0
    allowed_versions: frozenset[str] = frozenset()
    only_preferred_formats: bool = False
    min_title_match: float = 0.6


@dataclass(frozen=True)
class RankedCandidate:
    username: str
    file: CandidateFile
    score: float
    has_free_upload_slot: bool
    queue_length: int
    upload_speed: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rejection:
    username: str
    filename: str
    reason: str


@dataclass(frozen=True)
class RankingResult:
    accepted: list[RankedCandidate] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def best(self) -> RankedCandidate | None:
        return self.accepted[0] if self.accepted else None

    def explain(self, limit: int = 5) -> str:
        """One line on why nothing (or what) matched, for logs and user-facing errors."""
        if self.accepted:
            best = self.accepted[0]
            return f"{len(self.accepted)} candidates; best {best.file.filename} ({best.score:.1f})"
        if not self.rejected:
            return "no search results"
        counts: dict[str, int] = {}
        for rejection in self.rejected:
            key = rejection.reason.split(":", 1)[0]
            counts[key] = counts.get(key, 0) + 1
        parts = [f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1])]
        return f"all {len(self.rejected)} files rejected: " + "; ".join(parts[:limit])


def _path_parts(filename: str) -> tuple[str, str, str]:
    """(file name without extension, parent folder, whole path) of a remote file name."""
    parts = [p for p in re.split(r"[\\/]+", filename) if p]
    name = parts[-1] if parts else filename
    stem = name.rsplit(".", 1)[0] if "." in name else name
    folder = parts[-2] if len(parts) >= 2 else ""
    return stem, folder, filename


def _effective_bitrate(file: CandidateFile) -> int | None:
    """kbps as declared, else estimated from size and length."""
    if file.bit_rate:
        return file.bit_rate
    if file.size and file.length_s:
        return int(file.size * 8 / file.length_s / 1000)
    return None


def evaluate(
    request: TrackRequest,
    policy: QualityPolicy,
    response: SearchResponse,
    file: CandidateFile,
) -> RankedCandidate | Rejection:
    """Score one file, or say why it is unacceptable."""

    def reject(reason: str) -> Rejection:
        return Rejection(response.username, file.filename, reason)

    ext = file.extension or file.filename.rsplit(".", 1)[-1].lower()
    preferred = [f.lower() for f in policy.preferred_formats]
    if ext not in AUDIO_EXTENSIONS:
        return reject(f"not audio: .{ext or '?'}")
    if policy.only_preferred_formats and ext not in preferred:
        return reject(f"format not allowed: .{ext} (allowed {', '.join(preferred)})")
    if file.is_locked:
        return reject("locked: the peer does not share this file with us")

    stem, folder, whole = _path_parts(file.filename)
    requested_versions = detect_versions(request.title)
    file_versions = detect_versions(stem) | detect_versions(folder)
    unwanted = file_versions - requested_versions - set(policy.allowed_versions)
    if unwanted:
        return reject(f"unwanted version: {', '.join(sorted(unwanted))}")

    lossless = ext in LOSSLESS_EXTENSIONS
    bitrate = _effective_bitrate(file)
    notes: list[str] = []
    if not lossless:
        if bitrate is not None and bitrate < policy.min_bitrate_kbps:
            return reject(f"below bitrate floor: {bitrate} < {policy.min_bitrate_kbps} kbps")
        if bitrate is None:
            notes.append("bitrate unknown")

    duration_diff: float | None = None
    if request.duration_ms and file.length_s:
        duration_diff = abs(file.length_s - request.duration_ms / 1000)
        if duration_diff > policy.duration_tolerance_s:
            return reject(
                f"duration mismatch: {file.length_s}s vs {request.duration_ms / 1000:.0f}s "
                f"(tolerance {policy.duration_tolerance_s:g}s)"
            )

    path_tokens = set(tokens(whole))
    title_match = coverage(tokens(clean_title(request.title)), set(tokens(stem)))
    if title_match < policy.min_title_match:
        # A peer may name files "01.flac" inside a titled folder: try the whole path too.
        title_match = max(
            title_match, 0.9 * coverage(tokens(clean_title(request.title)), path_tokens)
        )
    if title_match < policy.min_title_match:
        return reject(f"title mismatch: {title_match:.0%} of title words in the file name")
    artist_match = coverage(tokens(request.artist), path_tokens)
    album_match = coverage(tokens(request.album), path_tokens) if request.album else 0.0

    score = 0.0
    if ext in preferred:
        score += 30.0 * (1 - preferred.index(ext) / len(preferred))
    if lossless and policy.prefer_lossless:
        score += 20.0
    if lossless:
        score += 15.0
    elif bitrate is not None:
        score += 15.0 * min(bitrate, 320) / 320
    else:
        score += 5.0
    score += 20.0 * title_match + 10.0 * artist_match + 5.0 * album_match
    missing = requested_versions - file_versions
    if missing:
        # The request names a version ("Song - Live"); a studio file is a worse fit.
        score -= 10.0
        notes.append(f"requested version not evident: {', '.join(sorted(missing))}")
    if duration_diff is not None:
        score += 5.0 * (1 - duration_diff / max(policy.duration_tolerance_s, 0.001))
    if response.has_free_upload_slot:
        score += 10.0
    score -= 10.0 * min(response.queue_length, 50) / 50
    score += 5.0 * min(response.upload_speed, 5_000_000) / 5_000_000
    return RankedCandidate(
        username=response.username,
        file=file,
        score=round(score, 3),
        has_free_upload_slot=response.has_free_upload_slot,
        queue_length=response.queue_length,
        upload_speed=response.upload_speed,
        notes=tuple(notes),
    )


def rank_candidates(
    request: TrackRequest,
    responses: Iterable[SearchResponse],
    policy: QualityPolicy | None = None,
) -> RankingResult:
    """All acceptable files, best first, and every rejection with its reason.

    The ordered list doubles as the retry plan: when a peer fails, the caller moves on to the
    next candidate (preferably from another user).
    """
    active = policy or QualityPolicy()
    accepted: list[RankedCandidate] = []
    rejected: list[Rejection] = []
    for response in responses:
        for file in (*response.files, *response.locked_files):
            outcome = evaluate(request, active, response, file)
            if isinstance(outcome, Rejection):
                rejected.append(outcome)
            else:
                accepted.append(outcome)
    accepted.sort(key=lambda c: (-c.score, -c.upload_speed, c.queue_length, c.file.filename))
    return RankingResult(accepted=accepted, rejected=rejected)
