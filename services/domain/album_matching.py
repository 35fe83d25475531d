"""Score a folder of audio files against an album's track list: is it the whole album?

Pure functions shared by every module that serves download.album. A folder is acceptable when
its audio files are of one format that the quality rules allow, every lossy file is above the
bitrate floor, and, when the track list is known, it holds exactly as many files as the album
has tracks and every track finds its own file (title words, duration within the tolerance, no
unwanted version). Without a track list the folder's shape decides: one format, and a folder
path naming the album. Every rejection says why, so "no complete folder" can be explained.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.domain.matching import clean_title, coverage, detect_versions, tokens

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "AUDIO_EXTENSIONS",
    "LOSSLESS_EXTENSIONS",
    "ExpectedTrack",
    "FolderFile",
    "FolderRules",
    "FolderVerdict",
    "group_by_folder",
    "score_folder",
]

LOSSLESS_EXTENSIONS = frozenset({"flac", "wav", "aiff", "aif", "alac", "ape", "wv"})
AUDIO_EXTENSIONS = LOSSLESS_EXTENSIONS | frozenset(
    {"mp3", "m4a", "aac", "ogg", "opus", "wma", "mpc"}
)
# A leading track number ("01 - ", "1. ", "01_") is not part of a title.
_TRACK_NUMBER = re.compile(r"^\s*(\d{1,3})[\s._-]+")


@dataclass(frozen=True)
class ExpectedTrack:
    """One track of the album's track list."""

    title: str
    position: int = 0
    duration_s: float | None = None


@dataclass(frozen=True)
class FolderFile:
    """One file of a candidate folder: its path at the source and what is known of it."""

    path: str
    duration_s: float | None = None
    bitrate_kbps: int | None = None
    # The title tag, when the file was read (a local folder); else the name says the title.
    tag_title: str = ""

    @property
    def name(self) -> str:
        return re.split(r"[\\/]+", self.path)[-1]

    @property
    def extension(self) -> str:
        name = self.name
        return name.rsplit(".", 1)[-1].lower() if "." in name else ""

    @property
    def stem(self) -> str:
        name = self.name
        return name.rsplit(".", 1)[0] if "." in name else name

    @property
    def title(self) -> str:
        """The file's title: its tag, else its name without the extension and a leading
        track number."""
        if self.tag_title:
            return self.tag_title
        return _TRACK_NUMBER.sub("", self.stem).strip() or self.stem

    @property
    def number(self) -> int | None:
        found = _TRACK_NUMBER.match(self.stem)
        return int(found.group(1)) if found else None


@dataclass(frozen=True)
class FolderRules:
    """The quality floor and matching rules an album folder must meet."""

    allowed_formats: tuple[str, ...] = ()  # empty: any audio format
    preferred_formats: tuple[str, ...] = ("flac", "mp3")
    min_bitrate_kbps: int = 0
    prefer_lossless: bool = True
    duration_tolerance_s: float = 5.0
    allowed_versions: frozenset[str] = frozenset()
    min_title_match: float = 0.6
    min_album_match: float = 0.6


@dataclass(frozen=True)
class FolderVerdict:
    """A folder's verdict: accepted with its files in album order and a score, or the reason
    it is not the whole album."""

    folder: str
    files: tuple[FolderFile, ...] = ()
    # The expected track each file stands for, in the same order (None: no track list).
    tracks: tuple[ExpectedTrack | None, ...] = ()
    score: float = 0.0
    reason: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def accepted(self) -> bool:
        return not self.reason


def group_by_folder(paths: Iterable[FolderFile]) -> dict[str, list[FolderFile]]:
    """The files grouped by the folder that holds them (the path up to the last separator)."""
    folders: dict[str, list[FolderFile]] = {}
    for file in paths:
        parts = re.split(r"([\\/]+)", file.path)
        folder = "".join(parts[:-2]) if len(parts) >= 3 else ""
        folders.setdefault(folder, []).append(file)
    return folders


def _title_match(track: ExpectedTrack, file: FolderFile) -> float:
    return coverage(tokens(clean_title(track.title)), tokens(file.title))


def _assign(
    expected: Sequence[ExpectedTrack], files: Sequence[FolderFile], rules: FolderRules
) -> tuple[list[tuple[ExpectedTrack, FolderFile, float]], str]:
    """Each expected track paired with its own file, best pairs first; or why not."""
    pairs: list[tuple[float, int, int]] = []
    for t, track in enumerate(expected):
        for f, file in enumerate(files):
            match = _title_match(track, file)
            if match < rules.min_title_match:
                continue
            if (
                track.duration_s is not None
                and file.duration_s is not None
                and abs(track.duration_s - file.duration_s) > rules.duration_tolerance_s
            ):
                continue
            # A matching track number breaks ties between similar titles ("Intro", "Outro").
            bonus = 0.05 if track.position and file.number == track.position else 0.0
            pairs.append((match + bonus, t, f))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    used_tracks: dict[int, tuple[int, float]] = {}
    used_files: set[int] = set()
    for match, t, f in pairs:
        if t in used_tracks or f in used_files:
            continue
        used_tracks[t] = (f, match)
        used_files.add(f)
    missing = [expected[t] for t in range(len(expected)) if t not in used_tracks]
    if missing:
        first = missing[0]
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return [], (
            f"no file for track {first.position or expected.index(first) + 1} "
            f"{first.title!r}{more} (title or duration differs)"
        )
    return [
        (expected[t], files[f], min(match, 1.0)) for t, (f, match) in sorted(used_tracks.items())
    ], ""


def score_folder(
    folder: str,
    files: Sequence[FolderFile],
    expected: Sequence[ExpectedTrack],
    rules: FolderRules,
    *,
    album: str = "",
) -> FolderVerdict:
    """The verdict on one folder for an album (`expected` empty: judged by shape alone)."""

    def reject(reason: str) -> FolderVerdict:
        return FolderVerdict(folder=folder, reason=reason)

    audio = [f for f in files if f.extension in AUDIO_EXTENSIONS]
    if not audio:
        return reject("no audio files")
    formats = sorted({f.extension for f in audio})
    if len(formats) > 1:
        return reject(f"mixed formats: {', '.join(formats)}")
    ext = formats[0]
    if rules.allowed_formats and ext not in rules.allowed_formats:
        return reject(f"format not allowed: .{ext} (allowed {', '.join(rules.allowed_formats)})")
    lossless = ext in LOSSLESS_EXTENSIONS
    if not lossless and rules.min_bitrate_kbps:
        low = [f for f in audio if f.bitrate_kbps is not None]
        worst = min((f.bitrate_kbps or 0 for f in low), default=None)
        if worst is not None and worst < rules.min_bitrate_kbps:
            return reject(f"below bitrate floor: {worst} < {rules.min_bitrate_kbps} kbps")
    album_versions = detect_versions(folder) - detect_versions(album) - rules.allowed_versions
    if album_versions:
        return reject(f"unwanted version: {', '.join(sorted(album_versions))}")

    notes: list[str] = []
    if expected:
        if len(audio) != len(expected):
            return reject(f"{len(audio)} audio files, the album has {len(expected)} tracks")
        pairs, why = _assign(expected, audio, rules)
        if why:
            return reject(why)
        for track, file, _ in pairs:
            unwanted = detect_versions(file.stem) - detect_versions(track.title)
            unwanted -= rules.allowed_versions
            if unwanted:
                return reject(f"unwanted version in {file.name}: {', '.join(sorted(unwanted))}")
        ordered = sorted(pairs, key=lambda p: p[0].position or 0)
        title_score = sum(m for _, _, m in pairs) / len(pairs)
        durations = [
            abs(t.duration_s - f.duration_s)
            for t, f, _ in pairs
            if t.duration_s is not None and f.duration_s is not None
        ]
        closeness = (
            1 - sum(durations) / len(durations) / max(rules.duration_tolerance_s, 0.001)
            if durations
            else 0.5
        )
        score = 50.0 * title_score + 10.0 * closeness
        chosen_files = tuple(f for _, f, _ in ordered)
        chosen_tracks: tuple[ExpectedTrack | None, ...] = tuple(t for t, _, _ in ordered)
    else:
        notes.append("no track list: chosen by the folder's shape")
        album_match = coverage(tokens(album), tokens(folder)) if album else 1.0
        if album_match < rules.min_album_match:
            return reject(f"folder name does not name the album ({album_match:.0%} of its words)")
        chosen_files = tuple(sorted(audio, key=lambda f: (f.number or 0, f.name)))
        chosen_tracks = tuple(None for _ in chosen_files)
        score = 40.0 * album_match
    preferred = list(rules.preferred_formats)
    if ext in preferred:
        score += 30.0 * (1 - preferred.index(ext) / len(preferred))
    if lossless:
        score += 15.0 + (20.0 if rules.prefer_lossless else 0.0)
    else:
        rates = [f.bitrate_kbps for f in audio if f.bitrate_kbps]
        score += 15.0 * min(min(rates), 320) / 320 if rates else 5.0
    return FolderVerdict(
        folder=folder,
        files=chosen_files,
        tracks=chosen_tracks,
        score=round(score, 3),
        notes=tuple(notes),
    )
