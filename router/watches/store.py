"""Watched playlists and the tracks each has requested, behind the `WatchStore` protocol.

`SqliteWatchStore` keeps them in SQLite (WAL) in the router's state folder, so the schedule
survives restarts; with the bus on JetStream, `KvWatchStore` (kv_store.py) keeps them in a
JetStream KV bucket every router on that NATS shares. All SQLite work runs on one dedicated
thread: commits wait for the disk without stalling the router's event loop, and one connection
needs no locking.

A run starts with `claim`: in a shared store, of the routers that find a watch due, exactly
one claims it, and `finish_run` (or `release`) lets go. A single router's store has no one to
share with, so its claims are only the checks (the scheduler's lock keeps one run at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from google.protobuf import duration_pb2

from services.kit.support.playlist_reference import canonical_playlist
from services.kit.support.sqlite import StoreThread, open_wal, transaction
from services.kit.support.timestamps import timestamp_at
from soulspot.router.v1 import watches_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

DB_FILE = "watches.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS watches (
    playlist_id TEXT PRIMARY KEY,
    every_s REAL NOT NULL,
    next_run_at REAL NOT NULL,
    created_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    last_run_at REAL,
    last_result TEXT NOT NULL DEFAULT '',
    last_run_failed INTEGER NOT NULL DEFAULT 0,
    tracks_in_playlist INTEGER NOT NULL DEFAULT 0,
    last_requested INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS watches_by_next_run ON watches(next_run_at);
CREATE TABLE IF NOT EXISTS watch_tracks (
    playlist_id TEXT NOT NULL REFERENCES watches(playlist_id) ON DELETE CASCADE,
    track_key TEXT NOT NULL,
    requested_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    in_library INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (playlist_id, track_key)
);
"""
# Columns added after the first release: a store from then gains them at open (its tracks
# count as requested once, not known to be in the library).
_ADDED_TRACK_COLUMNS = {
    "attempts": "INTEGER NOT NULL DEFAULT 1",
    "in_library": "INTEGER NOT NULL DEFAULT 0",
}


class WatchBusy(Exception):
    """Another router holds a live claim on the watch: it is running it now."""

    def __init__(self, playlist_id: str, owner: str, until: float) -> None:
        super().__init__(f"playlist watch {playlist_id} is being run by router {owner}")
        self.owner = owner
        self.until = until


class WatchClaimLost(Exception):
    """This router's claim on the watch ran out and another router took it (or let it go):
    the run is over here, and nothing of it is written."""

    def __init__(self, playlist_id: str, owner: str) -> None:
        super().__init__(
            f"lost the claim on playlist watch {playlist_id}; it now belongs to"
            f" {f'router {owner}' if owner else 'no router'}"
        )
        self.playlist_id = playlist_id
        self.owner = owner


class WatchLimitReached(Exception):
    """A new watch would exceed the number of watches allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} playlists are watched already")
        self.limit = limit


@dataclass(slots=True)
class WatchRecord:
    """One watched playlist as stored; times are Unix seconds."""

    playlist_id: str
    every_s: float
    next_run_at: float
    created_at: float
    owner: str = ""
    name: str = ""
    last_run_at: float | None = None
    last_result: str = ""
    last_run_failed: bool = False
    tracks_in_playlist: int = 0
    last_requested: int = 0
    # Consecutive failed runs: how far a retry backs off.
    failures: int = 0
    # Tracks requested (or found in the library) since the watch was added.
    tracks_known: int = 0
    # The router running the watch now and until when its claim holds unless renewed
    # (a shared store only; "" in a router's own store).
    claim_owner: str = ""
    claim_until: float = 0.0

    def due_at(self) -> float:
        """When a scheduler should look at the watch next: its next run, or, while a router
        holds a claim on it, when that claim runs out unless renewed."""
        if self.claim_owner:
            return max(self.next_run_at, self.claim_until)
        return self.next_run_at

    def claimed_at(self, now: float) -> bool:
        """Whether a router holds a live claim on the watch at `now`."""
        return bool(self.claim_owner) and self.claim_until > now

    def to_proto(self, *, running: bool = False) -> watches_pb2.PlaylistWatch:
        watch = watches_pb2.PlaylistWatch(
            playlist_id=self.playlist_id,
            name=self.name,
            every=duration_pb2.Duration(seconds=round(self.every_s)),
            next_run_at=timestamp_at(self.next_run_at),
            last_result=self.last_result,
            last_run_failed=self.last_run_failed,
            tracks_in_playlist=self.tracks_in_playlist,
            last_requested=self.last_requested,
            tracks_known=self.tracks_known,
            owner=self.owner,
            created_at=timestamp_at(self.created_at),
            running=running,
        )
        if self.last_run_at is not None:
            watch.last_run_at.CopyFrom(timestamp_at(self.last_run_at))
        return watch


@dataclass(frozen=True, slots=True)
class KnownTrack:
    """A track a watch has seen: how often it was requested, when last, and whether the
    library was found holding it (then it is never requested again)."""

    attempts: int
    requested_at: float
    in_library: bool


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What one run of a watch leaves in the store."""

    name: str
    result: str
    failed: bool
    tracks_in_playlist: int
    requested: int


class WatchStore(Protocol):
    """Where watches live. Every method is a coroutine; implementations serialise writes."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def on_change(self, wake: Callable[[], None]) -> None:
        """Call `wake` when a watch is added, or changed so it may be due sooner, by
        another router sharing the store (never, for a store only this router writes)."""
        ...

    async def upsert(
        self, playlist_id: str, every_s: float, *, owner: str, now: float, limit: int
    ) -> tuple[WatchRecord, bool]:
        """Add a watch (first run due `now`) or change an existing one's interval (its next
        run counted from its last); (the watch, created). Raises WatchLimitReached when a new
        watch would make more than `limit`."""
        ...

    async def get(self, playlist_id: str) -> WatchRecord | None: ...

    async def list_watches(self) -> list[WatchRecord]:
        """Every watch, soonest next run first."""
        ...

    async def remove(self, playlist_id: str) -> WatchRecord | None:
        """Forget the watch and its tracks; the removed watch, or None."""
        ...

    async def known_tracks(self, playlist_id: str) -> dict[str, KnownTrack]: ...

    async def remember_tracks(
        self, playlist_id: str, keys: Sequence[str], now: float, *, in_library: bool = False
    ) -> None:
        """Record tracks as requested once more at `now` (their attempts count up), or, with
        `in_library`, as held by the library; nothing for a watch removed meanwhile. Raises
        WatchClaimLost when this router's claim on the watch went to another router."""
        ...

    async def claim(
        self, playlist_id: str, *, now: float, only_if_due: bool = False
    ) -> WatchRecord | None:
        """Take the watch for a run by this router: the watch, or None when it is gone (or,
        with `only_if_due`, not due at `now`). Raises WatchBusy while another router holds a
        live claim on it. The claim holds until `finish_run` or `release`."""
        ...

    async def release(self, playlist_id: str) -> None:
        """Let go of this router's claim without recording a run (the run was cut short)."""
        ...

    async def finish_run(
        self, playlist_id: str, run: RunRecord, *, ended_at: float, next_run_at: float
    ) -> WatchRecord | None:
        """Record a run's result and the next run, and let go of the claim; None when the
        watch is gone. Raises WatchClaimLost, writing nothing, when this router's claim went
        to another router meanwhile."""
        ...


class _SyncStore:
    _COLUMNS = (
        "w.playlist_id, w.every_s, w.next_run_at, w.created_at, w.owner, w.name, w.last_run_at,"
        " w.last_result, w.last_run_failed, w.tracks_in_playlist, w.last_requested, w.failures,"
        " (SELECT COUNT(*) FROM watch_tracks t WHERE t.playlist_id = w.playlist_id)"
    )

    def __init__(self, path: Path) -> None:
        # FULL: an acknowledged AddPlaylistWatch must survive a power cut, and writes are rare.
        self.db = open_wal(path, synchronous="FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(_SCHEMA)
        columns = {str(r[1]) for r in self.db.execute("PRAGMA table_info(watch_tracks)")}
        for name, declaration in _ADDED_TRACK_COLUMNS.items():
            if name not in columns:
                self.db.execute(f"ALTER TABLE watch_tracks ADD COLUMN {name} {declaration}")
        self._canonical_ids()

    def _canonical_ids(self) -> None:
        """Watches stored before their ids were made canonical (a share URL as given) are
        keyed by the playlist id from now on; one that duplicates a watch already keyed so
        hands it the tracks it requested and goes."""
        for (stored,) in self.db.execute("SELECT playlist_id FROM watches").fetchall():
            canonical = canonical_playlist(str(stored))
            if canonical == stored:
                continue
            with transaction(self.db):
                self.db.execute(
                    "INSERT OR IGNORE INTO watches (playlist_id, every_s, next_run_at,"
                    " created_at, owner, name, last_run_at, last_result, last_run_failed,"
                    " tracks_in_playlist, last_requested, failures)"
                    " SELECT ?, every_s, next_run_at, created_at, owner, name, last_run_at,"
                    " last_result, last_run_failed, tracks_in_playlist, last_requested, failures"
                    " FROM watches WHERE playlist_id = ?",
                    (canonical, stored),
                )
                self.db.execute(
                    "INSERT OR IGNORE INTO watch_tracks"
                    " (playlist_id, track_key, requested_at, attempts, in_library)"
                    " SELECT ?, track_key, requested_at, attempts, in_library FROM watch_tracks"
                    " WHERE playlist_id = ?",
                    (canonical, stored),
                )
                self.db.execute("DELETE FROM watches WHERE playlist_id = ?", (stored,))

    def close(self) -> None:
        self.db.close()

    @staticmethod
    def _record(row: tuple[object, ...]) -> WatchRecord:
        return WatchRecord(
            playlist_id=str(row[0]),
            every_s=float(row[1]),  # type: ignore[arg-type]
            next_run_at=float(row[2]),  # type: ignore[arg-type]
            created_at=float(row[3]),  # type: ignore[arg-type]
            owner=str(row[4]),
            name=str(row[5]),
            last_run_at=None if row[6] is None else float(row[6]),  # type: ignore[arg-type]
            last_result=str(row[7]),
            last_run_failed=bool(row[8]),
            tracks_in_playlist=int(row[9]),  # type: ignore[call-overload]
            last_requested=int(row[10]),  # type: ignore[call-overload]
            failures=int(row[11]),  # type: ignore[call-overload]
            tracks_known=int(row[12]),  # type: ignore[call-overload]
        )

    def get(self, playlist_id: str) -> WatchRecord | None:
        row = self.db.execute(
            f"SELECT {self._COLUMNS} FROM watches w WHERE w.playlist_id = ?", (playlist_id,)
        ).fetchone()
        return None if row is None else self._record(row)

    def list_watches(self) -> list[WatchRecord]:
        rows = self.db.execute(
            f"SELECT {self._COLUMNS} FROM watches w ORDER BY w.next_run_at, w.playlist_id"
        ).fetchall()
        return [self._record(r) for r in rows]

    def upsert(
        self, playlist_id: str, every_s: float, owner: str, now: float, limit: int
    ) -> tuple[WatchRecord, bool]:
        with transaction(self.db):
            existing = self.get(playlist_id)
            if existing is None:
                (count,) = self.db.execute("SELECT COUNT(*) FROM watches").fetchone()
                if count >= limit:
                    raise WatchLimitReached(limit)
                self.db.execute(
                    "INSERT INTO watches (playlist_id, every_s, next_run_at, created_at, owner)"
                    " VALUES (?,?,?,?,?)",
                    (playlist_id, every_s, now, now, owner),
                )
            else:
                # A shorter interval takes effect at once, a longer one from the last run.
                base = existing.last_run_at if existing.last_run_at is not None else now
                self.db.execute(
                    "UPDATE watches SET every_s = ?, next_run_at = ? WHERE playlist_id = ?",
                    (every_s, min(existing.next_run_at, base + every_s), playlist_id),
                )
            record = self.get(playlist_id)
        assert record is not None
        return record, existing is None

    def remove(self, playlist_id: str) -> WatchRecord | None:
        with transaction(self.db):
            record = self.get(playlist_id)
            if record is not None:
                self.db.execute("DELETE FROM watches WHERE playlist_id = ?", (playlist_id,))
        return record

    def known_tracks(self, playlist_id: str) -> dict[str, KnownTrack]:
        rows = self.db.execute(
            "SELECT track_key, attempts, requested_at, in_library FROM watch_tracks"
            " WHERE playlist_id = ?",
            (playlist_id,),
        ).fetchall()
        return {
            str(key): KnownTrack(int(attempts), float(at), bool(held))
            for key, attempts, at, held in rows
        }

    def remember_tracks(
        self, playlist_id: str, keys: Sequence[str], now: float, in_library: bool
    ) -> None:
        # A request counts one attempt; finding it in the library counts none.
        attempt = 0 if in_library else 1
        with transaction(self.db):
            self.db.executemany(
                "INSERT INTO watch_tracks"
                " (playlist_id, track_key, requested_at, attempts, in_library)"
                " SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM watches WHERE playlist_id = ?)"
                " ON CONFLICT (playlist_id, track_key) DO UPDATE SET"
                " attempts = attempts + excluded.attempts,"
                " requested_at = CASE WHEN excluded.attempts > 0"
                " THEN excluded.requested_at ELSE requested_at END,"
                " in_library = excluded.in_library",
                [(playlist_id, key, now, attempt, int(in_library), playlist_id) for key in keys],
            )

    def finish_run(
        self, playlist_id: str, run: RunRecord, ended_at: float, next_run_at: float
    ) -> WatchRecord | None:
        with transaction(self.db):
            self.db.execute(
                "UPDATE watches SET name = CASE WHEN ? = '' THEN name ELSE ? END,"
                " last_run_at = ?, last_result = ?, last_run_failed = ?, next_run_at = ?,"
                " tracks_in_playlist = CASE WHEN ? THEN tracks_in_playlist ELSE ? END,"
                " last_requested = ?,"
                " failures = CASE WHEN ? THEN failures + 1 ELSE 0 END"
                " WHERE playlist_id = ?",
                (
                    run.name,
                    run.name,
                    ended_at,
                    run.result,
                    int(run.failed),
                    next_run_at,
                    int(run.failed and run.tracks_in_playlist == 0),
                    run.tracks_in_playlist,
                    run.requested,
                    int(run.failed),
                    playlist_id,
                ),
            )
            return self.get(playlist_id)


class SqliteWatchStore:
    """The async face of the SQLite store; every call runs on the store's own thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._thread = StoreThread(lambda: _SyncStore(self.path), thread_name="watch-store")
        self._call = self._thread.call

    async def open(self) -> None:
        await self._thread.open()

    async def close(self) -> None:
        await self._thread.close()

    def on_change(self, wake: Callable[[], None]) -> None:
        """Nothing to tell: every change goes through this router, whose service wakes its
        scheduler itself."""

    async def upsert(
        self, playlist_id: str, every_s: float, *, owner: str, now: float, limit: int
    ) -> tuple[WatchRecord, bool]:
        return await self._call(lambda s: s.upsert(playlist_id, every_s, owner, now, limit))

    async def get(self, playlist_id: str) -> WatchRecord | None:
        return await self._call(lambda s: s.get(playlist_id))

    async def list_watches(self) -> list[WatchRecord]:
        return await self._call(lambda s: s.list_watches())

    async def remove(self, playlist_id: str) -> WatchRecord | None:
        return await self._call(lambda s: s.remove(playlist_id))

    async def known_tracks(self, playlist_id: str) -> dict[str, KnownTrack]:
        return await self._call(lambda s: s.known_tracks(playlist_id))

    async def remember_tracks(
        self, playlist_id: str, keys: Sequence[str], now: float, *, in_library: bool = False
    ) -> None:
        if keys:
            await self._call(lambda s: s.remember_tracks(playlist_id, list(keys), now, in_library))

    async def claim(
        self, playlist_id: str, *, now: float, only_if_due: bool = False
    ) -> WatchRecord | None:
        # One router per store: the scheduler's lock is the whole claim.
        watch = await self.get(playlist_id)
        if watch is None or (only_if_due and watch.next_run_at > now):
            return None
        return watch

    async def release(self, playlist_id: str) -> None:
        return None

    async def finish_run(
        self, playlist_id: str, run: RunRecord, *, ended_at: float, next_run_at: float
    ) -> WatchRecord | None:
        return await self._call(lambda s: s.finish_run(playlist_id, run, ended_at, next_run_at))
