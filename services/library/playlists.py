"""M3U playlists in the library: `Playlists/<name>.m3u8` listing the tracks the library holds,
in playlist order, with paths relative to the playlist file.

The file is replaced whole on every write (a temporary file beside it, synced, renamed over
it, the folder synced), so a player never reads half a playlist. The name goes through the
library's own naming rules and always becomes one file name inside the playlists folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from services.domain.files import fsync_dir, fsync_file
from services.kit.rpc.errors import FailedPrecondition, InvalidArgument, bad_request
from services.library.naming import sanitize_segment

if TYPE_CHECKING:
    from collections.abc import Sequence

    from services.library.importer import Importer
    from soulspot.common.v1 import references_pb2

__all__ = [
    "MAX_PLAYLIST_TRACKS",
    "PLAYLISTS_DIR",
    "PlaylistLine",
    "PlaylistWriter",
    "WrittenPlaylist",
    "m3u_text",
    "playlist_file_name",
]

PLAYLISTS_DIR = "Playlists"
SUFFIX = ".m3u8"
# A bound on one request: larger than any playlist Spotify allows (10,000 items).
MAX_PLAYLIST_TRACKS = 20_000
# A line break in a tag would start a new entry in the file.
_LINE_BREAKS = re.compile(r"[\r\n\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class PlaylistLine:
    """One entry: the file (relative to the playlist) and what #EXTINF says of it."""

    path: str
    seconds: int
    artist: str
    title: str


@dataclass
class WrittenPlaylist:
    path: Path
    written: int
    missing_positions: list[int] = field(default_factory=list)


def playlist_file_name(name: str) -> str:
    """`name` as the playlist's file name; InvalidArgument when nothing usable is left."""
    stem = sanitize_segment(name)
    if not stem:
        raise InvalidArgument(
            f"the playlist name {name!r} leaves no usable file name",
            details=[bad_request({"name": "must contain letters or digits"})],
        )
    return sanitize_segment(stem + SUFFIX, keep_suffix=SUFFIX)


def _one_line(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text).strip()


def m3u_text(lines: Sequence[PlaylistLine]) -> str:
    """The extended M3U for `lines`, UTF-8 text (what the .m3u8 suffix promises)."""
    out = ["#EXTM3U"]
    for line in lines:
        label = " - ".join(p for p in (_one_line(line.artist), _one_line(line.title)) if p)
        out.append(f"#EXTINF:{line.seconds},{label}")
        out.append(_one_line(line.path))
    return "\n".join(out) + "\n"


def _seconds(track: references_pb2.TrackReference, file: references_pb2.FileReference) -> int:
    duration_ms = file.duration_ms or track.duration_ms
    # -1 is M3U's "length unknown".
    return round(duration_ms / 1000) if duration_ms else -1


class PlaylistWriter:
    """Writes playlists of the tracks `importer`'s library holds."""

    def __init__(self, importer: Importer) -> None:
        self._importer = importer

    @property
    def folder(self) -> Path:
        return self._importer.root / PLAYLISTS_DIR

    async def write(
        self, name: str, tracks: Sequence[references_pb2.TrackReference]
    ) -> WrittenPlaylist:
        if not name.strip():
            raise InvalidArgument(
                "a playlist needs a name", details=[bad_request({"name": "required"})]
            )
        if len(tracks) > MAX_PLAYLIST_TRACKS:
            raise InvalidArgument(
                f"{len(tracks)} tracks is more than a playlist may hold ({MAX_PLAYLIST_TRACKS})",
                details=[bad_request({"tracks": f"at most {MAX_PLAYLIST_TRACKS} tracks"})],
            )
        file_name = playlist_file_name(name)
        held: list[tuple[references_pb2.TrackReference, references_pb2.FileReference]] = []
        missing: list[int] = []
        for position, track in enumerate(tracks, 1):
            found = await self._importer.check(track)
            if not found.downloaded or found.file is None:
                missing.append(position)
                continue
            held.append((track, found.file))
        path = await asyncio.to_thread(self._replace, file_name, held)
        return WrittenPlaylist(path, len(held), missing)

    def _lines(
        self, held: Sequence[tuple[references_pb2.TrackReference, references_pb2.FileReference]]
    ) -> list[PlaylistLine]:
        return [
            PlaylistLine(
                path=Path(os.path.relpath(file.path, self.folder)).as_posix(),
                seconds=_seconds(track, file),
                artist=track.artist,
                title=track.title,
            )
            for track, file in held
        ]

    def _replace(
        self,
        file_name: str,
        held: Sequence[tuple[references_pb2.TrackReference, references_pb2.FileReference]],
    ) -> Path:
        folder = self.folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FailedPrecondition(f"cannot create the playlists folder {folder}: {err}") from err
        # The folder must be the library's own: a symbolic link could send the write anywhere.
        if folder.is_symlink() or not folder.resolve().is_relative_to(
            self._importer.root.resolve()
        ):
            raise FailedPrecondition(
                f"the playlists folder {folder} is a symbolic link or leaves the library root; "
                "playlists are written only inside the library"
            )
        dest = folder / file_name
        temporary = folder / f".{file_name}.{uuid.uuid4().hex}.tmp"
        try:
            temporary.write_text(m3u_text(self._lines(held)), encoding="utf-8")
            fsync_file(temporary)
            # os.replace swaps the name itself; an old file (or a symlink put there) is
            # replaced, never written through.
            os.replace(temporary, dest)
            fsync_dir(folder)
        except OSError as err:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise FailedPrecondition(f"cannot write the playlist {dest}: {err}") from err
        return dest
