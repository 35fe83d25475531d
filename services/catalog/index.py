"""The library's track index: one SQLite table of tracks and an FTS5 index over their text.

Rows are keyed by the file's path, so indexing the same file again (a redelivered
track.imported, a rescan) updates it instead of adding a duplicate. Searching runs an FTS5
prefix query over title, artist, album, ISRC and path, then scores the hits from 0 to 1 by
how much of the query and of the title they cover.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.domain.audio.probe import AUDIO_SUFFIXES, read_audio, track_reference
from services.domain.matching import coverage, tokens
from services.kit.support.sqlite import open_wal
from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Iterator

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    track_id TEXT NOT NULL DEFAULT '',
    spotify_id TEXT NOT NULL DEFAULT '',
    musicbrainz_id TEXT NOT NULL DEFAULT '',
    isrc TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL,
    artist TEXT NOT NULL DEFAULT '',
    album TEXT NOT NULL DEFAULT '',
    album_artist TEXT NOT NULL DEFAULT '',
    duration_ms INTEGER NOT NULL DEFAULT 0,
    track_number INTEGER NOT NULL DEFAULT 0,
    disc_number INTEGER NOT NULL DEFAULT 0,
    year INTEGER NOT NULL DEFAULT 0,
    genre TEXT NOT NULL DEFAULT '',
    mtime_ns INTEGER NOT NULL DEFAULT 0
);
CREATE VIRTUAL TABLE IF NOT EXISTS tracks_fts USING fts5(
    title, artist, album, isrc, path,
    content='tracks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS tracks_ai AFTER INSERT ON tracks BEGIN
    INSERT INTO tracks_fts(rowid, title, artist, album, isrc, path)
    VALUES (new.id, new.title, new.artist, new.album, new.isrc, new.path);
END;
CREATE TRIGGER IF NOT EXISTS tracks_ad AFTER DELETE ON tracks BEGIN
    INSERT INTO tracks_fts(tracks_fts, rowid, title, artist, album, isrc, path)
    VALUES ('delete', old.id, old.title, old.artist, old.album, old.isrc, old.path);
END;
CREATE TRIGGER IF NOT EXISTS tracks_au AFTER UPDATE ON tracks BEGIN
    INSERT INTO tracks_fts(tracks_fts, rowid, title, artist, album, isrc, path)
    VALUES ('delete', old.id, old.title, old.artist, old.album, old.isrc, old.path);
    INSERT INTO tracks_fts(rowid, title, artist, album, isrc, path)
    VALUES (new.id, new.title, new.artist, new.album, new.isrc, new.path);
END;
"""

_COLUMNS = (
    "path",
    "track_id",
    "spotify_id",
    "musicbrainz_id",
    "isrc",
    "title",
    "artist",
    "album",
    "album_artist",
    "duration_ms",
    "track_number",
    "disc_number",
    "year",
    "genre",
    "mtime_ns",
)
_ISRC = re.compile(r"^[A-Z]{2}[A-Z0-9]{3}\d{7}$")


@dataclass(frozen=True)
class Hit:
    track: references_pb2.TrackReference
    path: str
    score: float


class CatalogIndex:
    """Thread-safe (one connection behind a lock); call it from a worker thread."""

    def __init__(self, db_path: Path) -> None:
        # NORMAL: the index is rebuilt from events and the library scan, a lost commit costs
        # nothing.
        self._db = open_wal(db_path, synchronous="NORMAL", schema=_SCHEMA, row_factory=True)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM tracks").fetchone()[0])

    # -- writing ---------------------------------------------------------------------------------

    def upsert(self, track: references_pb2.TrackReference, path: str, mtime_ns: int = 0) -> None:
        values = (
            path,
            track.track_id,
            track.spotify_id,
            track.musicbrainz_id,
            track.isrc.upper(),
            track.title,
            track.artist,
            track.album,
            track.album_artist,
            track.duration_ms,
            track.track_number,
            track.disc_number,
            track.year,
            track.genre,
            mtime_ns,
        )
        updates = ", ".join(f"{c}=excluded.{c}" for c in _COLUMNS if c != "path")
        with self._lock:
            self._db.execute(
                f"INSERT INTO tracks ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _COLUMNS)}) "
                f"ON CONFLICT(path) DO UPDATE SET {updates}",
                values,
            )

    def remove(self, path: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM tracks WHERE path = ?", (path,))

    def _known(self, root: Path) -> dict[str, int]:
        prefix = str(root.resolve()).rstrip(os.sep) + os.sep
        with self._lock:
            rows = self._db.execute(
                "SELECT path, mtime_ns FROM tracks WHERE substr(path, 1, ?) = ?",
                (len(prefix), prefix),
            ).fetchall()
        return {str(r["path"]): int(r["mtime_ns"]) for r in rows}

    def scan(self, root: Path) -> tuple[int, int]:
        """Index the audio files under `root` (only new or changed ones are read) and drop
        rows of files that are gone; returns (read, removed)."""
        if not root.is_dir():
            return 0, 0
        known = self._known(root)
        seen: set[str] = set()
        read = 0
        for path in _audio_files(root.resolve()):
            try:
                mtime = path.stat().st_mtime_ns
            except OSError:
                continue
            key = str(path)
            seen.add(key)
            if known.get(key) == mtime:
                continue
            facts = read_audio(path)
            if not facts.readable:
                continue
            self.upsert(track_reference(facts), key, mtime)
            read += 1
        gone = set(known) - seen
        for key in gone:
            self.remove(key)
        return read, len(gone)

    # -- searching -------------------------------------------------------------------------------

    def search(self, query: str, limit: int) -> list[Hit]:
        words = tokens(query)
        if not words:
            return []
        isrc = query.strip().upper().replace("-", "")
        rows: list[sqlite3.Row] = []
        with self._lock:
            if _ISRC.match(isrc):
                rows = self._db.execute("SELECT * FROM tracks WHERE isrc = ?", (isrc,)).fetchall()
                if rows:
                    return [Hit(_track(r), str(r["path"]), 1.0) for r in rows[:limit]]
            # Every word must appear (as a prefix, so "harb" finds "Harbour"); when that
            # finds nothing, any word may, and the score says how much of the query matched.
            for joiner in (" AND ", " OR "):
                match = joiner.join(f'"{w}"*' for w in words)
                rows = self._db.execute(
                    "SELECT tracks.*, bm25(tracks_fts, 10.0, 5.0, 2.0, 5.0, 0.5) AS rank "
                    "FROM tracks_fts JOIN tracks ON tracks.id = tracks_fts.rowid "
                    "WHERE tracks_fts MATCH ? ORDER BY rank LIMIT ?",
                    (match, max(limit * 5, 50)),
                ).fetchall()
                if rows:
                    break
        hits = [Hit(_track(r), str(r["path"]), _score(words, r)) for r in rows]
        # bm25 order breaks ties (rows came sorted by it and sort() is stable).
        hits.sort(key=lambda h: -h.score)
        return hits[:limit]


def _score(words: list[str], row: sqlite3.Row) -> float:
    """From 0 to 1: how much of the query the track's text covers, and how much of the
    title the query covers (so "harbour lights" ranks the exact title above a longer one)."""
    title = tokens(str(row["title"]))
    text = title + tokens(str(row["artist"])) + tokens(str(row["album"]))
    prefixes = {t[:n] for t in text for n in range(1, len(t) + 1)}
    query_covered = coverage(words, prefixes)
    title_covered = coverage(title, words)
    return round(0.6 * query_covered + 0.4 * title_covered, 4)


def _track(row: sqlite3.Row) -> references_pb2.TrackReference:
    return references_pb2.TrackReference(
        track_id=row["track_id"],
        spotify_id=row["spotify_id"],
        musicbrainz_id=row["musicbrainz_id"],
        isrc=row["isrc"],
        title=row["title"],
        artist=row["artist"],
        album=row["album"],
        album_artist=row["album_artist"],
        duration_ms=row["duration_ms"],
        track_number=row["track_number"],
        disc_number=row["disc_number"],
        year=row["year"],
        genre=row["genre"],
    )


def _audio_files(root: Path) -> Iterator[Path]:
    # os.walk does not descend into linked folders; a linked or special file is skipped too
    # (lstat), so the index never describes anything outside the library.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.rsplit(".", 1)[-1].lower() in AUDIO_SUFFIXES:
                path = Path(dirpath) / name
                try:
                    regular = stat.S_ISREG(os.lstat(path).st_mode)
                except OSError:
                    continue
                if regular:
                    yield path
