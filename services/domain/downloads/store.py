"""The SQLite file behind a DownloadRegistry: download records, counters, held events.

A downloader module forgets nothing across a restart: GetDownload still answers for ids it
handed out, the statistics keep counting, and events not yet handed to the router are sent
after the restart as the same envelope (same event_id: if the router had stored one and only
its answer was lost, it stores it once). One small file per module (WAL); writes are a row
or two, so they run on the caller's thread (synchronous=NORMAL: a commit does not wait for a
sync; a power cut may lose the last moments, a process crash loses nothing).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from services.kit.support.sqlite import open_wal, transaction
from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

__all__ = ["DownloadStore", "HeldEvent", "StoredDownload"]

FILE_NAME = "downloads.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS downloads (
    download_id TEXT PRIMARY KEY,
    track BLOB NOT NULL,
    requested_by TEXT NOT NULL,
    state INTEGER NOT NULL,
    source TEXT NOT NULL,
    remote_filename TEXT NOT NULL,
    expected_size INTEGER NOT NULL,
    percent REAL NOT NULL,
    file BLOB,
    error TEXT NOT NULL,
    tried_sources TEXT NOT NULL,
    started_at_us INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL,
    terminal INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS downloads_by_end ON downloads(terminal, updated_at_us);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS held_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    payload_type TEXT NOT NULL,
    data BLOB NOT NULL,
    subject TEXT NOT NULL,
    envelope BLOB
);
"""
# A file from before held events kept their envelope lacks the column (its rows keep NULL).
_HELD_ENVELOPE_COLUMN = "ALTER TABLE held_events ADD COLUMN envelope BLOB"

_COLUMNS = (
    "download_id, track, requested_by, state, source, remote_filename, expected_size, percent,"
    " file, error, tried_sources, started_at_us, updated_at_us, terminal"
)


@dataclass(frozen=True)
class StoredDownload:
    """One download as stored (what survives a restart)."""

    download_id: str
    track: references_pb2.TrackReference
    requested_by: str
    state: int
    source: str
    remote_filename: str
    expected_size: int
    percent: float
    file: references_pb2.FileReference | None
    error: str
    tried_sources: list[str]
    started_at: datetime
    terminal: bool


@dataclass(frozen=True)
class HeldEvent:
    """An event queued for publishing and not yet handed over."""

    held_id: int
    payload_type: str  # the payload's message name in soulspot.events.v1 download_pb2
    data: bytes
    subject: str
    # The serialized EventEnvelope as first built; None in rows written before it was kept
    # (payload_type, data and subject are still written, so an older version can read them).
    envelope: bytes | None = None


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _row(row: Sequence[Any]) -> StoredDownload:
    track = references_pb2.TrackReference()
    track.ParseFromString(bytes(row[1]))
    file = None
    if row[8] is not None:
        file = references_pb2.FileReference()
        file.ParseFromString(bytes(row[8]))
    return StoredDownload(
        download_id=str(row[0]),
        track=track,
        requested_by=str(row[2]),
        state=int(row[3]),
        source=str(row[4]),
        remote_filename=str(row[5]),
        expected_size=int(row[6]),
        percent=float(row[7]),
        file=file,
        error=str(row[9]),
        tried_sources=list(json.loads(str(row[10]))),
        started_at=datetime.fromtimestamp(int(row[11]) / 1_000_000, UTC),
        terminal=bool(row[13]),
    )


class DownloadStore:
    """The downloads file of one module. Not thread-safe: used from the event loop only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_wal(path, synchronous="NORMAL", schema=_SCHEMA)
        columns = {str(r[1]) for r in self._db.execute("PRAGMA table_info(held_events)")}
        if "envelope" not in columns:
            self._db.execute(_HELD_ENVELOPE_COLUMN)

    def close(self) -> None:
        self._db.close()

    # -- reading ---------------------------------------------------------------------------------

    def load(self, *, recent_terminal: int) -> list[StoredDownload]:
        """Every download that has not ended, and the `recent_terminal` that ended last."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM downloads WHERE terminal = 0"
            f" UNION ALL SELECT * FROM (SELECT {_COLUMNS} FROM downloads WHERE terminal = 1"
            " ORDER BY updated_at_us DESC LIMIT ?)",
            (recent_terminal,),
        ).fetchall()
        return [_row(r) for r in rows]

    def get(self, download_id: str) -> StoredDownload | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM downloads WHERE download_id = ?", (download_id,)
        ).fetchone()
        return _row(row) if row is not None else None

    def counters(self) -> dict[str, int]:
        return {str(n): int(v) for n, v in self._db.execute("SELECT name, value FROM counters")}

    def held(self) -> list[HeldEvent]:
        rows = self._db.execute(
            "SELECT id, payload_type, data, subject, envelope FROM held_events ORDER BY id"
        ).fetchall()
        return [
            HeldEvent(
                int(r[0]),
                str(r[1]),
                bytes(r[2]),
                str(r[3]),
                bytes(r[4]) if r[4] is not None else None,
            )
            for r in rows
        ]

    # -- writing ---------------------------------------------------------------------------------

    def save(
        self,
        download: StoredDownload,
        *,
        counters: Mapping[str, int] | None = None,
        hold: tuple[str, bytes, str, bytes] | None = None,
    ) -> int | None:
        """Store a download's state, and in the same commit the counters and an event to
        publish (payload type, payload bytes, subject, envelope bytes): a crash never leaves
        a completed download without its download.completed. Returns the held event's id."""
        values = (
            download.download_id,
            download.track.SerializeToString(),
            download.requested_by,
            download.state,
            download.source,
            download.remote_filename,
            download.expected_size,
            download.percent,
            download.file.SerializeToString() if download.file is not None else None,
            download.error,
            json.dumps(download.tried_sources),
            _us(download.started_at),
            time.time_ns() // 1000,
            1 if download.terminal else 0,
        )
        held_id: int | None = None
        with transaction(self._db, immediate=False):
            self._db.execute(
                f"INSERT OR REPLACE INTO downloads ({_COLUMNS}) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            if counters:
                self._db.executemany(
                    "INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)",
                    list(counters.items()),
                )
            if hold is not None:
                cur = self._db.execute(
                    "INSERT INTO held_events (payload_type, data, subject, envelope)"
                    " VALUES (?, ?, ?, ?)",
                    hold,
                )
                held_id = cur.lastrowid
        return held_id

    def release(self, held_id: int) -> None:
        """The event was handed to the publisher (or given up): it is not sent again."""
        self._db.execute("DELETE FROM held_events WHERE id = ?", (held_id,))
