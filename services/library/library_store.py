"""LibraryStore: one SQLite row per file in the library (WAL, one writer).

The full TrackReference and FileReference are stored as protobuf bytes beside the indexed
columns the lookups need, so nothing a caller sent is lost and new contract fields survive a
round trip without a schema change.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from services.domain.matching import clean_title, normalize
from services.kit.support.sqlite import open_wal
from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    import sqlite3
    from pathlib import Path

__all__ = ["LibraryEntry", "LibraryStore", "title_artist_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tracks (
    file_id TEXT PRIMARY KEY,
    track_id TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    checksum TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    quality TEXT NOT NULL,
    isrc TEXT,
    musicbrainz_id TEXT,
    spotify_id TEXT,
    artist_key TEXT NOT NULL,
    album_key TEXT NOT NULL,
    title_artist_key TEXT NOT NULL,
    imported_at TEXT NOT NULL,
    track BLOB NOT NULL,
    file BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tracks_checksum ON tracks (checksum);
CREATE INDEX IF NOT EXISTS tracks_isrc ON tracks (isrc);
CREATE INDEX IF NOT EXISTS tracks_musicbrainz_id ON tracks (musicbrainz_id);
CREATE INDEX IF NOT EXISTS tracks_spotify_id ON tracks (spotify_id);
CREATE INDEX IF NOT EXISTS tracks_title_artist ON tracks (title_artist_key);
"""


def title_artist_key(title: str, artist: str) -> str:
    """Title and artist as compared: case, accents, punctuation and "(feat. X)" ignored;
    version words ("Live", "Remix") kept, since those are different recordings."""
    return f"{normalize(clean_title(title))}|{normalize(artist)}"


@dataclass(frozen=True)
class LibraryEntry:
    track: references_pb2.TrackReference
    file: references_pb2.FileReference


def _entry(row: sqlite3.Row) -> LibraryEntry:
    track = references_pb2.TrackReference()
    track.ParseFromString(row["track"])
    file = references_pb2.FileReference()
    file.ParseFromString(row["file"])
    return LibraryEntry(track, file)


class LibraryStore:
    """Thread-safe (one lock) access to the library's database; call from worker threads."""

    def __init__(self, db_path: Path) -> None:
        # FULL: a committed import survives a power cut, matching the file's fsync.
        self._db = open_wal(db_path, synchronous="FULL", schema=_SCHEMA, row_factory=True)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def insert(
        self, track: references_pb2.TrackReference, file: references_pb2.FileReference
    ) -> None:
        quality = references_pb2.QualityTier.Name(file.quality)
        album_artist = track.album_artist or track.artist
        with self._lock:
            self._db.execute(
                "INSERT INTO tracks (file_id, track_id, path, checksum, size_bytes, quality,"
                " isrc, musicbrainz_id, spotify_id, artist_key, album_key, title_artist_key,"
                " imported_at, track, file) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    file.file_id,
                    track.track_id,
                    file.path,
                    file.checksum,
                    file.size_bytes,
                    quality,
                    track.isrc.upper() or None,
                    track.musicbrainz_id.lower() or None,
                    track.spotify_id or None,
                    normalize(track.artist),
                    f"{normalize(album_artist)}|{normalize(track.album)}",
                    title_artist_key(track.title, track.artist),
                    datetime.now(UTC).isoformat(),
                    track.SerializeToString(),
                    file.SerializeToString(),
                ),
            )

    def delete(self, file_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM tracks WHERE file_id = ?", (file_id,))

    def _find(self, column: str, value: str) -> list[LibraryEntry]:
        # `column` is one of this module's own constants, never caller input.
        with self._lock:
            rows = self._db.execute(
                f"SELECT track, file FROM tracks WHERE {column} = ? ORDER BY imported_at",
                (value,),
            ).fetchall()
        return [_entry(r) for r in rows]

    def by_checksum(self, checksum: str) -> list[LibraryEntry]:
        return self._find("checksum", checksum.lower()) if checksum else []

    def by_isrc(self, isrc: str) -> list[LibraryEntry]:
        return self._find("isrc", isrc.upper()) if isrc else []

    def by_musicbrainz_id(self, mbid: str) -> list[LibraryEntry]:
        return self._find("musicbrainz_id", mbid.lower()) if mbid else []

    def by_spotify_id(self, spotify_id: str) -> list[LibraryEntry]:
        return self._find("spotify_id", spotify_id) if spotify_id else []

    def by_title_artist(self, title: str, artist: str) -> list[LibraryEntry]:
        if not normalize(title) or not normalize(artist):
            return []
        return self._find("title_artist_key", title_artist_key(title, artist))

    def by_path(self, path: str) -> list[LibraryEntry]:
        return self._find("path", path)

    def statistics(self) -> tuple[int, int, int, int, dict[str, int]]:
        """(tracks, artists, albums, total bytes, tracks per quality tier name)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT artist_key), COUNT(DISTINCT album_key),"
                " COALESCE(SUM(size_bytes), 0) FROM tracks"
            ).fetchone()
            by_quality = {
                str(r[0]): int(r[1])
                for r in self._db.execute("SELECT quality, COUNT(*) FROM tracks GROUP BY quality")
            }
        return int(row[0]), int(row[1]), int(row[2]), int(row[3]), by_quality
