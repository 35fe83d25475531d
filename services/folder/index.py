"""An index of a source folder's audio files by their tags, and matching a request to them.

Only regular files inside the folder are indexed (no symlinks, no special files). Files are
read with mutagen once and re-read only when their size or mtime changes, so a
rescan of a large folder costs a directory walk. Matching compares normalised text (case,
accents, punctuation), the duration, and the version words: a plain request never gets a
live, remix or karaoke file, exactly as the Soulseek ranking decides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING

from services.domain.audio.probe import AUDIO_SUFFIXES, AudioFacts, read_audio
from services.domain.matching import clean_title, coverage, tokens, unwanted_versions
from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable

AudioFormat = references_pb2.AudioFormat
_LOSSLESS = frozenset(
    {
        AudioFormat.AUDIO_FORMAT_FLAC,
        AudioFormat.AUDIO_FORMAT_ALAC,
        AudioFormat.AUDIO_FORMAT_WAV,
        AudioFormat.AUDIO_FORMAT_AIFF,
    }
)
MIN_TITLE_MATCH = 0.75
MIN_ARTIST_MATCH = 0.5


@dataclass
class Entry:
    """One indexed file."""

    facts: AudioFacts
    relative: str  # path inside the source folder
    stamp: tuple[int, int]  # (size, mtime_ns) when read

    @property
    def title(self) -> str:
        return self.facts.tag("title") or self.facts.path.stem

    @property
    def artist(self) -> str:
        return self.facts.tag("artist") or self.facts.tag("albumartist")


@dataclass
class Match:
    entry: Entry
    score: float


@dataclass
class MatchResult:
    matches: list[Match] = field(default_factory=list)  # best first
    rejections: list[str] = field(default_factory=list)  # "file: reason", closest first

    def explain(self, limit: int = 3) -> str:
        if not self.rejections:
            return "no file in the source folder resembles it"
        return "closest files rejected: " + "; ".join(self.rejections[:limit])


class FolderIndex:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: dict[Path, Entry] = {}

    def scan(self) -> int:
        """Bring the index in line with the folder; returns how many files were (re)read."""
        seen: set[Path] = set()
        read = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            # Hidden folders hold staging files and tool caches, not music.
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith(".") or name.rsplit(".", 1)[-1].lower() not in AUDIO_SUFFIXES:
                    continue
                path = Path(dirpath) / name
                try:
                    # lstat, not stat: a link (to a file outside the source folder) or a
                    # special file (a FIFO would block the reader) is never indexed. os.walk
                    # already stays out of linked folders.
                    info = os.lstat(path)
                except OSError:
                    continue
                if not S_ISREG(info.st_mode):
                    continue
                seen.add(path)
                stamp = (info.st_size, info.st_mtime_ns)
                known = self.entries.get(path)
                if known is not None and known.stamp == stamp:
                    continue
                try:
                    facts = read_audio(path)
                except OSError:
                    continue
                read += 1
                self.entries[path] = Entry(facts, str(path.relative_to(self.root)), stamp)
        for gone in set(self.entries) - seen:
            del self.entries[gone]
        return read

    def match(
        self,
        track: references_pb2.TrackReference,
        *,
        tolerance_ms: int,
        allowed_versions: Iterable[str] = (),
        require_lossless: bool = False,
        min_bitrate_kbps: int = 0,
        preferred_formats: Iterable[int] = (),
    ) -> MatchResult:
        allowed = list(allowed_versions)
        preferred = list(preferred_formats)
        want_title = tokens(clean_title(track.title))
        want_artist = tokens(track.artist)
        want_album = tokens(track.album)
        want_isrc = track.isrc.strip().upper()
        result = MatchResult()
        near: list[tuple[float, str]] = []
        for entry in self.entries.values():
            facts = entry.facts
            isrc_hit = bool(want_isrc) and facts.tag("isrc").upper() == want_isrc
            have_title = tokens(clean_title(entry.title))
            title_match = coverage(want_title, have_title) * coverage(have_title, want_title)
            have_artist = tokens(entry.artist)
            artist_match = max(
                coverage(want_artist, have_artist), coverage(have_artist, want_artist)
            )
            closeness = title_match + artist_match
            label = entry.relative

            def reject(reason: str, closeness: float = closeness, label: str = label) -> None:
                near.append((closeness, f"{label}: {reason}"))

            if not isrc_hit:
                if title_match < MIN_TITLE_MATCH:
                    reject(f"title {entry.title!r} differs")
                    continue
                if artist_match < MIN_ARTIST_MATCH:
                    reject(f"artist {entry.artist!r} differs")
                    continue
            unwanted = unwanted_versions(
                track.title, (entry.title, facts.path.stem, facts.tag("album")), allowed
            )
            if unwanted and not isrc_hit:
                reject(f"unwanted version: {', '.join(sorted(unwanted))}")
                continue
            diff_ms: int | None = None
            if track.duration_ms and facts.duration_ms:
                diff_ms = abs(int(track.duration_ms) - facts.duration_ms)
                if diff_ms > tolerance_ms:
                    reject(
                        f"duration {facts.duration_ms / 1000:.1f}s vs "
                        f"{track.duration_ms / 1000:.1f}s"
                    )
                    continue
            lossless = facts.format in _LOSSLESS
            if require_lossless and not lossless:
                reject("not lossless")
                continue
            if not lossless and min_bitrate_kbps and facts.bitrate_kbps < min_bitrate_kbps:
                reject(f"below bitrate floor: {facts.bitrate_kbps} < {min_bitrate_kbps} kbps")
                continue
            score = 40.0 * title_match + 20.0 * artist_match
            if isrc_hit:
                score += 50.0
            if want_album:
                score += 10.0 * coverage(want_album, tokens(facts.tag("album")))
            if diff_ms is not None:
                score += 10.0 * (1 - diff_ms / max(tolerance_ms, 1))
            if lossless:
                score += 5.0
            if facts.format in preferred:
                score += 5.0 * (1 - preferred.index(facts.format) / len(preferred))
            result.matches.append(Match(entry, round(score, 3)))
        result.matches.sort(key=lambda m: (-m.score, m.entry.relative))
        near.sort(key=lambda item: -item[0])
        result.rejections = [text for _, text in near]
        return result
