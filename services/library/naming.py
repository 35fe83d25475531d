"""Where a track goes in the library: the path template and file-name sanitising.

A template is a relative path with `str.format` tokens, one folder per `/`:

    {albumartist}/{album} ({year})/{disc_prefix}{track:02d} - {title}.{ext}

Tokens: artist, albumartist, album, title, year, disc, disc_prefix ("2-" on discs after the
first, else empty), track, ext. Values are sanitised before they are inserted (so "AC/DC" stays
one folder), and every rendered segment again after (so the template's own text cannot smuggle
in reserved names). A value that is not known renders empty; the brackets and separators left
around it are tidied away ("Album ()" becomes "Album", " - Title" becomes "Title").
"""

from __future__ import annotations

import re
import string
import unicodedata
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from soulspot.common.v1 import references_pb2

__all__ = [
    "DEFAULT_TEMPLATE",
    "MAX_SEGMENT_BYTES",
    "TemplateError",
    "numbered",
    "render_path",
    "sanitize_segment",
    "validate_template",
]

DEFAULT_TEMPLATE = "{albumartist}/{album} ({year})/{disc_prefix}{track:02d} - {title}.{ext}"
TOKENS = frozenset(
    {"artist", "albumartist", "album", "title", "year", "disc", "disc_prefix", "track", "ext"}
)

# Most filesystems allow 255 bytes per name; the margin leaves room for " (99)" collision
# suffixes and the temporary names used while a file is being placed.
MAX_SEGMENT_BYTES = 200

UNKNOWN_ARTIST = "Unknown Artist"
UNKNOWN_ALBUM = "Unknown Album"
UNKNOWN_TITLE = "Unknown Title"

# Path separators, characters Windows, SMB and FAT reject, and control characters.
_RESERVED_CHARS = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')
# Names Windows reserves whatever the extension (a library is often shared to Windows).
_RESERVED_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)
_EMPTY_BRACKETS = re.compile(r"\s*(\(\s*\)|\[\s*\]|\{\s*\})")
_LEADING_JUNK = re.compile(r"^[\s._-]+")
_TRAILING_JUNK = re.compile(r"[\s_-]+$")
_SPACES = re.compile(r"\s+")


class TemplateError(ValueError):
    """The path template is malformed or could leave the library root."""


class _Blank:
    """An unknown value: renders empty under any format spec (`{track:02d}` included)."""

    def __format__(self, spec: str) -> str:
        return ""


_BLANK = _Blank()


def validate_template(template: str) -> None:
    """TemplateError unless the template is a relative path using only known tokens."""
    if not template.strip():
        raise TemplateError("the path template is empty")
    if template.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", template):
        raise TemplateError(f"the path template must be relative to the library root: {template}")
    parts = PurePosixPath(template.replace("\\", "/")).parts
    if any(part == ".." for part in parts):
        raise TemplateError(f"the path template must not climb out with '..': {template}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise TemplateError(f"the path template is malformed: {err}") from err
    unknown = sorted({f.split(".")[0].split("[")[0] for f in fields} - TOKENS)
    if unknown:
        raise TemplateError(
            f"unknown token(s) {', '.join(unknown)} in the path template; "
            f"known: {', '.join(sorted(TOKENS))}"
        )


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    # errors="ignore" drops a multi-byte character cut in half.
    return encoded[:limit].decode("utf-8", "ignore").rstrip()


def sanitize_segment(name: str, *, keep_suffix: str = "") -> str:
    """One safe path segment: no separators or reserved characters, no leading dot, no
    trailing dot or space, not a reserved device name, at most MAX_SEGMENT_BYTES bytes.
    `keep_suffix` (".flac") survives truncation. Returns "" for nothing usable."""
    text = unicodedata.normalize("NFC", name)
    stem = text[: -len(keep_suffix)] if keep_suffix and text.endswith(keep_suffix) else text
    # Whitespace first, so a tab or newline becomes a space rather than an underscore.
    stem = _RESERVED_CHARS.sub("_", _SPACES.sub(" ", stem))
    stem = _EMPTY_BRACKETS.sub("", stem)
    # A leading dot hides the file (and ".." climbs out); leading separators are leftovers
    # of an empty token.
    stem = _LEADING_JUNK.sub("", stem)
    stem = _TRAILING_JUNK.sub("", stem).rstrip(". ")
    if stem.split(".")[0].upper() in _RESERVED_NAMES:
        stem += "_"
    stem = _truncate_utf8(stem, MAX_SEGMENT_BYTES - len(keep_suffix.encode("utf-8")))
    stem = stem.rstrip(". ")
    if not stem:
        return ""
    return stem + keep_suffix


def _value(text: str) -> str:
    """A token value: reserved characters replaced, so it stays inside its segment."""
    return _RESERVED_CHARS.sub("_", _SPACES.sub(" ", text)).strip()


def _values(track: references_pb2.TrackReference, ext: str) -> dict[str, Any]:
    artist = _value(track.artist) or UNKNOWN_ARTIST
    disc = track.disc_number
    return {
        "artist": artist,
        "albumartist": _value(track.album_artist) or artist,
        "album": _value(track.album) or UNKNOWN_ALBUM,
        "title": _value(track.title) or UNKNOWN_TITLE,
        "year": track.year or _BLANK,
        "disc": disc or _BLANK,
        # Only later discs get a prefix: the number of discs is not known, and single-disc
        # albums (most of them) should not all read "1-01 - ...".
        "disc_prefix": f"{disc}-" if disc > 1 else "",
        "track": track.track_number or _BLANK,
        "ext": _value(ext).lower().lstrip(".") or "bin",
    }


def render_path(template: str, track: references_pb2.TrackReference, ext: str) -> PurePosixPath:
    """The relative library path for `track` (a file with extension `ext`)."""
    validate_template(template)
    rendered = template.replace("\\", "/").format_map(_values(track, ext))
    raw_parts = [p for p in rendered.split("/") if p.strip()]
    if not raw_parts:
        raise TemplateError("the path template rendered an empty path")
    suffix = "." + _values(track, ext)["ext"]
    parts: list[str] = []
    for index, part in enumerate(raw_parts):
        last = index == len(raw_parts) - 1
        keep = suffix if last and part.endswith(suffix) else ""
        segment = sanitize_segment(part, keep_suffix=keep)
        if not segment or segment == keep:
            segment = (UNKNOWN_TITLE + keep) if last else UNKNOWN_ALBUM
        parts.append(segment)
    return PurePosixPath(*parts)


def numbered(name: str, n: int) -> str:
    """ "Song.flac" -> "Song (2).flac": the name for the n-th file wanting the same place."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return f"{name} ({n})"
    return f"{stem} ({n}).{ext}"
