"""Track lists from files: a CSV with Artist, Title, Album and Length columns (as sldl reads
them) and a plain list of "Artist - Title" lines.

Both give TrackReferences in file order, the same shape a Spotify playlist's tracks have, so
`sync-playlist` handles every source alike. A file that cannot be read as a track list raises
SourceError with a message saying what was found and what is needed; nothing is started then.
"""

from __future__ import annotations

import csv
import re
from typing import TYPE_CHECKING

from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["SourceError", "parse_length", "read_csv", "read_list"]

# Header names sldl accepts for each field, compared case-insensitively.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "artist": ("artist", "artists", "artist name", "artist name(s)"),
    "title": ("title", "track", "track name", "name", "song"),
    "album": ("album", "album name"),
    "length": ("length", "duration", "duration_s", "seconds"),
}
_CLOCK = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{1,2})")


class SourceError(ValueError):
    """The file is not a usable track list; the message says why."""


def parse_length(text: str) -> int:
    """A length in milliseconds from seconds ("215", "215.4") or a clock ("3:35", "1:02:03");
    0 for an empty cell. ValueError for anything else."""
    value = text.strip()
    if not value:
        return 0
    if match := _CLOCK.fullmatch(value):
        hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
        return (hours * 3600 + minutes * 60 + seconds) * 1000
    seconds_f = float(value)
    if seconds_f < 0 or seconds_f != seconds_f:  # negative or NaN
        raise ValueError(value)
    return round(seconds_f * 1000)


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig: spreadsheets often start their CSV export with a byte-order mark.
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise SourceError(f"{path}: no such file") from err
    except UnicodeDecodeError as err:
        raise SourceError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise SourceError(f"{path}: {err.strerror or err}") from err


def read_csv(path: Path) -> list[references_pb2.TrackReference]:
    """The tracks of a CSV file with a header row; a Title column is required."""
    text = _read_text(path)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
            text[:4096], delimiters=",;\t"
        )
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(text.splitlines(), dialect)
    header = next(rows, None)
    if header is None:
        raise SourceError(f"{path}: the file is empty; expected a header row with a Title column")
    found = [h.strip() for h in header]
    index: dict[str, int] = {}
    for column, names in _COLUMNS.items():
        for position, name in enumerate(found):
            if name.lower() in names and column not in index:
                index[column] = position
    if "title" not in index:
        shown = ", ".join(repr(h) for h in found if h) or "none"
        raise SourceError(
            f"{path}: no title column; columns found: {shown}. Needed: a Title column "
            "(Artist, Album and Length are optional; Length in seconds or m:ss)"
        )
    tracks: list[references_pb2.TrackReference] = []
    for line_number, row in enumerate(rows, 2):
        cells = [c.strip() for c in row]

        def cell(column: str, cells: list[str] = cells) -> str:
            at = index.get(column)
            return cells[at] if at is not None and at < len(cells) else ""

        title = cell("title")
        if not title:
            if any(cells):
                raise SourceError(f"{path}, line {line_number}: the title is empty")
            continue  # a blank line
        try:
            duration_ms = parse_length(cell("length"))
        except ValueError as err:
            raise SourceError(
                f"{path}, line {line_number}: length {cell('length')!r} is neither seconds nor m:ss"
            ) from err
        tracks.append(
            references_pb2.TrackReference(
                title=title, artist=cell("artist"), album=cell("album"), duration_ms=duration_ms
            )
        )
    return tracks


def read_list(path: Path) -> list[references_pb2.TrackReference]:
    """The tracks of a text file of "Artist - Title" lines; blank lines and # comments are
    skipped, and a line without " - " is a title alone."""
    tracks: list[references_pb2.TrackReference] = []
    for line in _read_text(path).splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        artist, separator, title = entry.partition(" - ")
        if not separator:
            artist, title = "", entry
        tracks.append(references_pb2.TrackReference(title=title.strip(), artist=artist.strip()))
    return tracks
