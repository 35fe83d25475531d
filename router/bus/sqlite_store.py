"""The SQLite event store: WAL, group commit, synchronous=FULL, on dedicated threads.

One writer thread owns the write connection. Writes queue up while a commit is syncing and
the next commit takes all of them (group commit): many concurrent publishes share one fsync,
and every publish is answered only after the commit that holds it returned (synchronous=FULL:
the WAL is synced before the commit returns; a store opened with NORMAL answers once the
commit is written, and syncs at checkpoints). A second thread owns a read connection, so
queries never wait behind a sync. The event loop only enqueues work and is woken with the
results.

Every SQLite call releases the GIL and must take it back, which can wait for a busy event
loop: that wait, not the sync, is most of a commit's latency. So appends that share a commit
go in as one multi-row INSERT outside any transaction (a lone statement is its own
transaction): one call instead of BEGIN, one per event and COMMIT; a bigger commit takes
one INSERT per `ROWS_PER_INSERT` events in a transaction. Anything else (parked events, a
duplicate event_id, other writes) takes an explicit transaction, one statement per event,
without a savepoint per operation unless one failed.

Consumer bookkeeping (acks, failures, dead letters of a consumer) is written lazily: it
waits up to `LAZY_COMMIT_S` for a transaction to join, so acks never cost a sync of their
own. Queries about consumer state commit what is waiting first. Losing it in a crash means
redelivery, which at-least-once allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import timestamp_pb2

from router.bus.store import (
    AppendResult,
    ConsumerRecord,
    DeadLetterRecord,
    EventPage,
    Parking,
    PendingRecord,
    ReplayRecord,
)
from services.kit.support.sqlite import Synchronous, open_wal
from soulspot.events.v1 import envelope_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence
    from pathlib import Path

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
MAX_BATCH_OPS = 2048
# At most this many events go into one multi-row INSERT (8 parameters each, well inside
# SQLite's limit of 32,766).
ROWS_PER_INSERT = 512
# How long lazy writes (consumer bookkeeping) may wait for a commit to join.
LAZY_COMMIT_S = 0.2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    stored_at_us INTEGER NOT NULL,
    correlation_id TEXT NOT NULL,
    parked INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_type ON events(event_type, seq);
CREATE INDEX IF NOT EXISTS events_by_time ON events(stored_at_us);
CREATE INDEX IF NOT EXISTS events_by_correlation ON events(correlation_id, seq);
CREATE TABLE IF NOT EXISTS consumers (
    name TEXT PRIMARY KEY,
    patterns TEXT NOT NULL,
    floor INTEGER NOT NULL,
    -- Removed after this long without a subscriber (0: kept), idle since (0: attached).
    inactive_s REAL NOT NULL DEFAULT 0,
    idle_since_us INTEGER NOT NULL DEFAULT 0,
    -- The identity URI that created it ('' for none yet: claimed by its next subscriber).
    owner TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS consumer_done (
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (consumer, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consumer_pending (
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    replay INTEGER NOT NULL,
    -- A replayed dead letter's own copy of the event (NULL otherwise), see _migrate.
    data BLOB,
    PRIMARY KEY (consumer, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    reason INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    parked_at_us INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_consumer ON dead_letters(consumer, id);
"""

_STOP = object()
Op = Any  # Callable[[sqlite3.Connection], object]


class _RetryIsolated(Exception):
    """An operation failed in a batch run without savepoints: run it again isolated."""


def _connect(path: Path, *, readonly: bool, synchronous: Synchronous) -> sqlite3.Connection:
    # FULL: the WAL is synced at every commit, so an answered publish survives power loss;
    # NORMAL: written at every commit, synced at checkpoints (survives a process crash).
    conn = open_wal(path, synchronous=synchronous, busy_timeout_ms=10000)
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


class _Worker(threading.Thread):
    """Runs operations on its own connection; the writer batches them into one commit."""

    def __init__(self, name: str, conn: sqlite3.Connection, *, batching: bool) -> None:
        super().__init__(name=name, daemon=True)
        self._conn = conn
        self._batching = batching
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.on_rollback: Callable[[sqlite3.Connection], None] | None = None
        # Set by the store: commits appends as multi-row INSERTs, or answers None to leave
        # them to the usual transaction (see SqliteEventStore._append_rows).
        self.append_rows: Callable[[sqlite3.Connection, list[Op]], list[object] | None] | None = (
            None
        )

    def submit(
        self,
        op: Callable[[sqlite3.Connection], _T],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[_T] | None,
        *,
        lazy: bool = False,
    ) -> None:
        """Queue an operation; a lazy one does not start a commit of its own at once."""
        self._queue.put((op, loop, future, lazy))

    def stop(self) -> None:
        self._queue.put(_STOP)

    def run(self) -> None:
        try:
            if self._batching:
                self._run_batching()
            else:
                while (item := self._queue.get()) is not _STOP:
                    self._resolve([item], [self._run_one(item[0])])
        finally:
            self._conn.close()

    def _run_batching(self) -> None:
        # Lazy operations wait here, in queue order, until their time is up or an eager one
        # arrives that cannot go alone as appended rows; then they join its commit.
        held: list[Any] = []
        held_until = 0.0
        while True:
            try:
                if held:
                    item = self._queue.get(timeout=max(0.0, held_until - time.monotonic()))
                else:
                    item = self._queue.get()
            except queue.Empty:
                item = None  # the lazy operations waited long enough
            stop = item is _STOP
            if not held:
                held_until = time.monotonic() + LAZY_COMMIT_S
            pending = held
            if item is not None and not stop:
                pending.append(item)
            while not stop and len(pending) < MAX_BATCH_OPS:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                pending.append(nxt)
            # Checked by the clock too: under steady appends the wait above never times out.
            due = stop or len(pending) >= MAX_BATCH_OPS or time.monotonic() >= held_until
            held = self._commit_pending(pending, due=due)
            if stop:
                return

    def _commit_pending(self, pending: list[Any], *, due: bool) -> list[Any]:
        """Commit what has to go now; returns the lazy operations that may wait on.

        Eager operations that are all appends go alone, as multi-row INSERTs: up to
        ROWS_PER_INSERT events make one statement, its own transaction, so the commit makes
        one call into SQLite instead of BEGIN, one per event and COMMIT, and every such call
        gives up the GIL and has to win it back from a busy event loop (most of a commit's
        latency). Otherwise, or once the lazy operations are `due`, everything pending goes
        into one transaction.
        """
        eager = [item for item in pending if not item[3]]
        if not eager and not due:
            return pending
        if eager and not due and self.append_rows is not None:
            results = self.append_rows(self._conn, [item[0] for item in eager])
            if results is not None:
                self._resolve(eager, [(True, result) for result in results])
                return [item for item in pending if item[3]]
        self._resolve(pending, self._run_batch(pending))
        return []

    def _run_one(self, op: Op) -> tuple[bool, object]:
        try:
            return True, op(self._conn)
        except Exception as err:
            return False, err

    def _run_batch(self, batch: list[Any]) -> list[tuple[bool, object]]:
        # Operations rarely fail: run them without savepoints, and only when one does, roll
        # the transaction back and run them again, each in a savepoint so the failing one
        # leaves the others whole.
        try:
            return self._commit(batch, isolate=False)
        except _RetryIsolated:
            pass
        except Exception as err:
            return self._failed(batch, err)
        try:
            return self._commit(batch, isolate=True)
        except Exception as err:
            return self._failed(batch, err)

    def _commit(self, batch: list[Any], *, isolate: bool) -> list[tuple[bool, object]]:
        conn = self._conn
        results: list[tuple[bool, object]] = []
        conn.execute("BEGIN IMMEDIATE")
        for item in batch:
            op = item[0]
            if not isolate:
                try:
                    results.append((True, op(conn)))
                except Exception as err:
                    self._rollback()
                    raise _RetryIsolated from err
                continue
            conn.execute("SAVEPOINT op")
            try:
                results.append((True, op(conn)))
                conn.execute("RELEASE op")
            except Exception as err:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                results.append((False, err))
        conn.execute("COMMIT")
        return results

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")
        if self.on_rollback is not None:
            self.on_rollback(self._conn)

    def _failed(self, batch: list[Any], err: Exception) -> list[tuple[bool, object]]:
        _log.exception("event store commit failed")
        self._rollback()
        return [(False, err)] * len(batch)

    @staticmethod
    def _resolve(batch: list[Any], results: list[tuple[bool, object]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, tuple[bool, object]]]] = {}
        for (op, loop, future, _lazy), result in zip(batch, results, strict=True):
            by_loop.setdefault(loop, []).append((op, future, result))
        for loop, items in by_loop.items():
            # One wake-up of the loop per commit, not one per operation.
            # RuntimeError: the loop is closed, nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[tuple[Any, asyncio.Future[Any] | None, tuple[bool, object]]]) -> None:
    for op, future, (ok, value) in items:
        after = getattr(op, "after_commit", None)
        if ok and after is not None:
            after(value)
        if future is None:
            if not ok:
                _log.error("event store write failed: %s", value)
            continue
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            assert isinstance(value, BaseException)
            future.set_exception(value)


_EVENT_COLUMNS = 8  # the parameters of one events row, as _insert_events_sql lists them


@functools.lru_cache(maxsize=64)
def _insert_events_sql(rows: int) -> str:
    """INSERT of `rows` events (the same text for the same count: SQLite's statement cache
    then skips preparing it again)."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO events (seq, event_id, event_type, stored_at_us, correlation_id,"
        f" parked, size, data) VALUES {values}"
    )


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a log written by an earlier version up to this schema."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(consumer_pending)")}
    if "data" not in columns:
        # A replayed dead letter carries its event along: retention may have removed it
        # from the log since it was parked.
        conn.execute("ALTER TABLE consumer_pending ADD COLUMN data BLOB")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(consumers)")}
    if "inactive_s" not in columns:
        # Consumers that go away on their own after a while without subscribers.
        conn.execute("ALTER TABLE consumers ADD COLUMN inactive_s REAL NOT NULL DEFAULT 0")
        conn.execute("ALTER TABLE consumers ADD COLUMN idle_since_us INTEGER NOT NULL DEFAULT 0")
    if "owner" not in columns:
        # Consumers belong to the identity that created them; those written before have no
        # owner and go to the first identity that subscribes (see EventBus).
        conn.execute("ALTER TABLE consumers ADD COLUMN owner TEXT NOT NULL DEFAULT ''")


def _commit_lazy_writes(_conn: sqlite3.Connection) -> None:
    """An eager write of nothing: the lazy writes queued before it are committed with it."""


def _now_us() -> int:
    return time.time_ns() // 1000


def _envelope(data: bytes) -> envelope_pb2.EventEnvelope:
    env = envelope_pb2.EventEnvelope()
    env.ParseFromString(data)
    return env


class _AppendOp:
    """One append; `after_commit` tells the listener, in commit order, on the loop."""

    def __init__(
        self,
        store: SqliteEventStore,
        envelopes: Sequence[envelope_pb2.EventEnvelope],
        parking: Sequence[Parking | None],
    ) -> None:
        self._store = store
        self.envelopes = envelopes
        self._parking = parking
        # Nothing parked: the events are rows of `events` and nothing else.
        self.plain = not any(parking)

    def __call__(self, conn: sqlite3.Connection) -> list[AppendResult]:
        return self._store._append_sync(conn, self.envelopes, self._parking)

    def after_commit(self, results: list[AppendResult]) -> None:
        listener = self._store.append_listener
        if listener is not None:
            fresh = [r for r in results if not r.duplicate]
            if fresh:
                listener(fresh)


class SqliteEventStore:
    """`EventStore` on one SQLite file."""

    def __init__(self, path: Path, *, synchronous: Synchronous = "FULL") -> None:
        self.path = path
        self.synchronous: Synchronous = synchronous
        self._writer: _Worker | None = None
        self._reader: _Worker | None = None
        self._next_seq = 1
        # Consumers known (on the writer thread) to have no done/failure rows at or below
        # their floor, so a progress write can skip the deletes that prune them.
        self._pruned: set[str] = set()
        # Set by the bus: called on the loop with each commit's new events, in log order.
        self.append_listener: Callable[[list[AppendResult]], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        wconn = await asyncio.to_thread(self._open_writer)
        rconn = await asyncio.to_thread(
            _connect, self.path, readonly=True, synchronous=self.synchronous
        )
        self._writer = _Worker("event-store-writer", wconn, batching=True)
        self._writer.on_rollback = self._reload_next_seq
        self._writer.append_rows = self._append_rows
        self._reader = _Worker("event-store-reader", rconn, batching=False)
        self._writer.start()
        self._reader.start()

    def _open_writer(self) -> sqlite3.Connection:
        conn = _connect(self.path, readonly=False, synchronous=self.synchronous)
        conn.executescript(_SCHEMA)
        _migrate(conn)
        self._reload_next_seq(conn)
        return conn

    def _reload_next_seq(self, conn: sqlite3.Connection) -> None:
        self._pruned.clear()  # a rolled-back prune may not have happened
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        self._next_seq = (int(row[0]) if row else 0) + 1

    async def close(self) -> None:
        for worker in (self._writer, self._reader):
            if worker is not None:
                worker.stop()
        for worker in (self._writer, self._reader):
            if worker is not None:
                await asyncio.to_thread(worker.join)
        self._writer = self._reader = None

    # -- plumbing --------------------------------------------------------------------------

    async def _write(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._write_soon(op)

    def _write_soon(self, op: Callable[[sqlite3.Connection], _T]) -> asyncio.Future[_T]:
        if self._writer is None:
            raise RuntimeError("event store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._writer.submit(op, loop, future)
        return future

    def _write_lazily(self, op: Callable[[sqlite3.Connection], object]) -> None:
        if self._writer is None:
            raise RuntimeError("event store is not open")
        self._writer.submit(op, asyncio.get_running_loop(), None, lazy=True)

    async def _read_settled(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """`_read` after the lazy writes queued so far are committed: for reads of consumer
        state (acks, failures, dead letters), which those writes change."""
        await self._write(_commit_lazy_writes)
        return await self._read(op)

    async def _read(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._reader is None:
            raise RuntimeError("event store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._reader.submit(op, loop, future)
        return await future

    # -- the log ---------------------------------------------------------------------------

    async def append(
        self,
        envelopes: Sequence[envelope_pb2.EventEnvelope],
        parking: Sequence[Parking | None],
    ) -> list[AppendResult]:
        return await self._write(_AppendOp(self, envelopes, parking))

    def append_soon(
        self,
        envelopes: Sequence[envelope_pb2.EventEnvelope],
        parking: Sequence[Parking | None],
    ) -> asyncio.Future[list[AppendResult]]:
        return self._write_soon(_AppendOp(self, envelopes, parking))

    @staticmethod
    def _stored_row(
        env: envelope_pb2.EventEnvelope, seq: int, parked: bool
    ) -> tuple[envelope_pb2.EventEnvelope, tuple[object, ...]]:
        """The event as stored (its sequence and storage time set) and its `events` row."""
        now_us = _now_us()
        stored = envelope_pb2.EventEnvelope()
        stored.CopyFrom(env)
        stored.sequence = seq
        stored.stored_at.CopyFrom(timestamp_pb2.Timestamp())
        stored.stored_at.FromMicroseconds(now_us)
        data = stored.SerializeToString()
        row = (
            seq,
            env.event_id,
            env.event_type,
            now_us,
            env.correlation_id,
            1 if parked else 0,
            len(data),
            data,
        )
        return stored, row

    def _append_rows(self, conn: sqlite3.Connection, ops: list[Op]) -> list[object] | None:
        """Every event of `ops` in multi-row INSERTs: one statement outside any transaction
        (SQLite runs a lone statement as its own transaction, all or nothing, synced like
        any commit) or, above ROWS_PER_INSERT events, one per ROWS_PER_INSERT in a
        transaction. None, with nothing written, when the usual path must decide: an op that
        is not a plain append, or a failure (an event_id already stored, above all)."""
        if not all(isinstance(op, _AppendOp) and op.plain for op in ops):
            return None
        seq = self._next_seq
        values: list[object] = []
        answers: list[object] = []
        for op in ops:
            results: list[AppendResult] = []
            for env in op.envelopes:
                stored, row = self._stored_row(env, seq, parked=False)
                values.extend(row)
                results.append(AppendResult(seq, False, stored))
                seq += 1
            answers.append(results)
        count = seq - self._next_seq
        if count == 0:
            return None
        try:
            if count <= ROWS_PER_INSERT:
                conn.execute(_insert_events_sql(count), values)
            else:
                conn.execute("BEGIN IMMEDIATE")
                width = ROWS_PER_INSERT * _EVENT_COLUMNS
                for start in range(0, len(values), width):
                    chunk = values[start : start + width]
                    conn.execute(_insert_events_sql(len(chunk) // _EVENT_COLUMNS), chunk)
                conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            return None
        self._next_seq = seq
        return answers

    def _append_sync(
        self,
        conn: sqlite3.Connection,
        envelopes: Sequence[envelope_pb2.EventEnvelope],
        parking: Sequence[Parking | None],
    ) -> list[AppendResult]:
        results: list[AppendResult] = []
        first_seq = self._next_seq
        try:
            for env, park in zip(envelopes, parking, strict=True):
                seq = self._next_seq
                stored, row = self._stored_row(env, seq, parked=park is not None)
                # One statement for a new event_id; a duplicate (rare) fails the statement
                # alone (which undoes only its own changes) and is looked up afterwards.
                try:
                    conn.execute(_insert_events_sql(1), row)
                except sqlite3.IntegrityError as err:
                    if "events.event_id" not in str(err):
                        raise
                    found = conn.execute(
                        "SELECT seq, data FROM events WHERE event_id = ?", (env.event_id,)
                    ).fetchone()
                    results.append(AppendResult(int(found[0]), True, _envelope(found[1])))
                    continue
                self._next_seq = seq + 1
                if park is not None:
                    conn.execute(
                        "INSERT INTO dead_letters (consumer, seq, reason, attempts, last_error,"
                        " parked_at_us, data) VALUES ('', ?, ?, 0, ?, ?, ?)",
                        (seq, park.reason, park.detail, row[3], row[7]),
                    )
                results.append(AppendResult(seq, False, stored, parked=park is not None))
        except BaseException:
            self._next_seq = first_seq  # the savepoint rolled the rows back
            raise
        return results

    async def last_sequence(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            return int(row[0]) if row else 0

        return await self._read(op)

    async def first_sequence_at(self, time_us: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT MIN(seq) FROM events WHERE stored_at_us >= ?", (time_us,)
            ).fetchone()
            if row and row[0] is not None:
                return int(row[0])
            last = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            return (int(last[0]) if last else 0) + 1

        return await self._read(op)

    async def read_after(
        self, after: int, limit: int, *, include_parked: bool = False
    ) -> EventPage:
        def op(conn: sqlite3.Connection) -> EventPage:
            conn.execute("BEGIN")
            try:
                rows = conn.execute(
                    "SELECT seq, parked, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, limit),
                ).fetchall()
                if len(rows) == limit:
                    scanned = int(rows[-1][0])
                else:
                    last = conn.execute(
                        "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
                    ).fetchone()
                    scanned = max(after, int(last[0]) if last else 0)
            finally:
                conn.execute("COMMIT")
            return EventPage([_envelope(r[2]) for r in rows if include_parked or not r[1]], scanned)

        return await self._read(op)

    async def read_sequences(self, sequences: Sequence[int]) -> list[envelope_pb2.EventEnvelope]:
        wanted = list(sequences)

        def op(conn: sqlite3.Connection) -> list[envelope_pb2.EventEnvelope]:
            out: list[envelope_pb2.EventEnvelope] = []
            for seq in wanted:
                row = conn.execute("SELECT data FROM events WHERE seq = ?", (seq,)).fetchone()
                if row is not None:
                    out.append(_envelope(row[0]))
            return out

        return await self._read(op)

    async def list_events(
        self,
        *,
        limit: int,
        oldest_first: bool,
        before: int | None,
        after: int | None,
        correlation_id: str,
        type_globs: Sequence[str],
    ) -> list[envelope_pb2.EventEnvelope]:
        where: list[str] = []
        args: list[object] = []
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        if after is not None:
            where.append("seq > ?")
            args.append(after)
        if correlation_id:
            where.append("correlation_id = ?")
            args.append(correlation_id)
        if type_globs:
            where.append("(" + " OR ".join("event_type GLOB ?" for _ in type_globs) + ")")
            args.extend(type_globs)
        sql = "SELECT data FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq " + ("ASC" if oldest_first else "DESC") + " LIMIT ?"
        args.append(limit)

        def op(conn: sqlite3.Connection) -> list[envelope_pb2.EventEnvelope]:
            return [_envelope(r[0]) for r in conn.execute(sql, args).fetchall()]

        return await self._read(op)

    # -- consumers -------------------------------------------------------------------------

    async def load_consumer(self, name: str) -> ConsumerRecord | None:
        def op(conn: sqlite3.Connection) -> ConsumerRecord | None:
            conn.execute("BEGIN")
            try:
                row = conn.execute(
                    "SELECT patterns, floor, inactive_s, owner FROM consumers WHERE name = ?",
                    (name,),
                ).fetchone()
                if row is None:
                    return None
                record = ConsumerRecord(
                    name,
                    tuple(p for p in str(row[0]).split("\n") if p),
                    int(row[1]),
                    inactive_s=float(row[2]),
                    owner=str(row[3]),
                )
                record.done_above_floor = {
                    int(r[0])
                    for r in conn.execute(
                        "SELECT seq FROM consumer_done WHERE consumer = ?", (name,)
                    )
                }
                for seq, attempts, last_error in conn.execute(
                    "SELECT seq, attempts, last_error FROM consumer_pending"
                    " WHERE consumer = ? AND replay = 0",
                    (name,),
                ):
                    record.pending[int(seq)] = PendingRecord(int(attempts), str(last_error))
                # Replays are only counted: the consumer reads them page by page.
                record.replays = int(
                    conn.execute(
                        "SELECT COUNT(*) FROM consumer_pending WHERE consumer = ? AND replay = 1",
                        (name,),
                    ).fetchone()[0]
                )
                return record
            finally:
                conn.execute("COMMIT")

        return await self._read_settled(op)

    async def save_consumer(
        self,
        name: str,
        patterns: Sequence[str],
        floor: int,
        *,
        inactive_s: float = 0.0,
        owner: str = "",
    ) -> None:
        joined = "\n".join(patterns)

        def op(conn: sqlite3.Connection) -> None:
            # An owner, once set, stays: only a consumer without one takes the new one.
            conn.execute(
                "INSERT INTO consumers (name, patterns, floor, inactive_s, owner)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET patterns = excluded.patterns,"
                " inactive_s = excluded.inactive_s,"
                " owner = CASE WHEN consumers.owner = '' THEN excluded.owner"
                " ELSE consumers.owner END",
                (name, joined, floor, inactive_s, owner),
            )

        await self._write(op)

    async def delete_consumer(self, name: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            for table in ("consumer_done", "consumer_pending"):
                conn.execute(f"DELETE FROM {table} WHERE consumer = ?", (name,))
            deleted = conn.execute("DELETE FROM consumers WHERE name = ?", (name,)).rowcount
            self._pruned.discard(name)
            return deleted > 0

        return await self._write(op)

    def set_consumer_idle(self, name: str, since_us: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE consumers SET idle_since_us = ? WHERE name = ?", (since_us, name))

        self._write_lazily(op)

    async def consumers_idle_from(self, since_us: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE consumers SET idle_since_us = ? WHERE inactive_s > 0 AND idle_since_us = 0",
                (since_us,),
            )

        await self._write(op)

    async def expire_consumers(
        self, now_us: int, *, keep: Collection[str], also: Collection[str] = ()
    ) -> tuple[list[str], int | None]:
        kept = set(keep)

        def op(conn: sqlite3.Connection) -> tuple[list[str], int | None]:
            # Only consumers that go when idle and are idle now; `keep` (the router's own,
            # which time themselves) are neither removed nor waited for.
            due = {
                str(name): int(since) + int(seconds * 1_000_000)
                for name, since, seconds in conn.execute(
                    "SELECT name, idle_since_us, inactive_s FROM consumers"
                    " WHERE inactive_s > 0 AND idle_since_us > 0"
                )
                if name not in kept
            }
            names = sorted({n for n, at in due.items() if at <= now_us} | (set(also) - kept))
            for name in names:
                for table in ("consumer_done", "consumer_pending"):
                    conn.execute(f"DELETE FROM {table} WHERE consumer = ?", (name,))
                conn.execute("DELETE FROM consumers WHERE name = ?", (name,))
                self._pruned.discard(name)
            later = [at for n, at in due.items() if n not in names]
            return names, (min(later) if later else None)

        return await self._write(op)

    def record_progress(
        self,
        consumer: str,
        floor: int,
        *,
        done: Sequence[int],
        cleared: Sequence[int],
        replays_done: Sequence[int],
    ) -> None:
        done_rows = [(consumer, s) for s in done if s > floor]
        cleared_rows = [(consumer, s) for s in (*cleared, *replays_done)]

        def op(conn: sqlite3.Connection) -> None:
            if cleared_rows:
                conn.executemany(
                    "DELETE FROM consumer_pending WHERE consumer = ? AND seq = ?", cleared_rows
                )
            cur = conn.execute(
                "UPDATE consumers SET floor = ? WHERE name = ? AND floor < ?",
                (floor, consumer, floor),
            )
            if cur.rowcount and consumer not in self._pruned:
                conn.execute(
                    "DELETE FROM consumer_done WHERE consumer = ? AND seq <= ?", (consumer, floor)
                )
                conn.execute(
                    "DELETE FROM consumer_pending WHERE consumer = ? AND seq <= ? AND replay = 0",
                    (consumer, floor),
                )
                self._pruned.add(consumer)
            if done_rows:
                self._pruned.discard(consumer)
                conn.executemany(
                    "INSERT OR IGNORE INTO consumer_done (consumer, seq) VALUES (?, ?)", done_rows
                )

        self._write_lazily(op)

    def record_failure(
        self, consumer: str, sequence: int, attempts: int, last_error: str, replay: bool
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            self._pruned.discard(consumer)
            conn.execute(
                "INSERT INTO consumer_pending (consumer, seq, attempts, last_error, replay)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(consumer, seq) DO UPDATE SET"
                " attempts = excluded.attempts, last_error = excluded.last_error",
                (consumer, sequence, attempts, last_error, 1 if replay else 0),
            )

        self._write_lazily(op)

    def park(
        self, consumer: str, sequence: int, reason: int, attempts: int, last_error: str
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            # The event from the log or, for a replay whose event retention has removed
            # since, the copy its replay carried (queued before the replay's done record,
            # so that row is still there).
            row = conn.execute("SELECT data FROM events WHERE seq = ?", (sequence,)).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT data FROM consumer_pending WHERE consumer = ? AND seq = ?"
                    " AND data IS NOT NULL",
                    (consumer, sequence),
                ).fetchone()
            if row is None:
                _log.warning(
                    "event %d of consumer %s is gone from the log: not parked",
                    sequence,
                    consumer,
                    extra={"consumer": consumer, "sequence": sequence},
                )
                return
            conn.execute(
                "INSERT INTO dead_letters (consumer, seq, reason, attempts, last_error,"
                " parked_at_us, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (consumer, sequence, reason, attempts, last_error, _now_us(), row[0]),
            )

        self._write_lazily(op)

    # -- dead letters ----------------------------------------------------------------------

    @staticmethod
    def _dead_letter(row: Sequence[Any]) -> DeadLetterRecord:
        return DeadLetterRecord(
            dead_letter_id=int(row[0]),
            consumer=str(row[1]),
            sequence=int(row[2]),
            reason=int(row[3]),
            attempts=int(row[4]),
            last_error=str(row[5]),
            parked_at_us=int(row[6]),
            envelope=_envelope(row[7]),
        )

    _DL_COLUMNS = "id, consumer, seq, reason, attempts, last_error, parked_at_us, data"

    async def list_dead_letters(self, consumer: str, limit: int) -> list[DeadLetterRecord]:
        sql = f"SELECT {self._DL_COLUMNS} FROM dead_letters"
        args: list[object] = []
        if consumer:
            sql += " WHERE consumer = ?"
            args.append(consumer)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)

        def op(conn: sqlite3.Connection) -> list[DeadLetterRecord]:
            return [self._dead_letter(r) for r in conn.execute(sql, args).fetchall()]

        return await self._read_settled(op)

    async def get_dead_letter(self, dead_letter_id: int) -> DeadLetterRecord | None:
        def op(conn: sqlite3.Connection) -> DeadLetterRecord | None:
            row = conn.execute(
                f"SELECT {self._DL_COLUMNS} FROM dead_letters WHERE id = ?", (dead_letter_id,)
            ).fetchone()
            return self._dead_letter(row) if row else None

        return await self._read_settled(op)

    async def take_dead_letters(self, ids: Sequence[int], consumer: str) -> dict[str, int]:
        wanted = list(ids)
        # Set-based: a consumer's whole dead-letter queue moves over without being read into
        # memory, however long it is.
        # The replay takes the dead letter's copy of the event: the log may not hold it any
        # more (retention), and the dead letter row goes.
        queue_sql = (
            "INSERT INTO consumer_pending (consumer, seq, attempts, last_error, replay, data)"
            " SELECT consumer, seq, 0, '', 1, data FROM dead_letters WHERE {where}"
            " ON CONFLICT(consumer, seq) DO UPDATE SET attempts = 0, replay = 1,"
            " data = excluded.data"
        )

        def op(conn: sqlite3.Connection) -> dict[str, int]:
            counts: dict[str, int] = {}
            if wanted:
                for dl_id in wanted:
                    row = conn.execute(
                        "SELECT consumer FROM dead_letters WHERE id = ? AND consumer != ''",
                        (dl_id,),
                    ).fetchone()
                    if row is None:
                        continue
                    name = str(row[0])
                    conn.execute(queue_sql.format(where="id = ?"), (dl_id,))
                    conn.execute("DELETE FROM dead_letters WHERE id = ?", (dl_id,))
                    counts[name] = counts.get(name, 0) + 1
            elif consumer:
                conn.execute(queue_sql.format(where="consumer = ?"), (consumer,))
                taken = conn.execute(
                    "DELETE FROM dead_letters WHERE consumer = ?", (consumer,)
                ).rowcount
                if taken:
                    counts[consumer] = int(taken)
            for name in counts:
                self._pruned.discard(name)
            return counts

        return await self._write(op)

    async def read_replays(self, consumer: str, after: int, limit: int) -> list[ReplayRecord]:
        def op(conn: sqlite3.Connection) -> list[ReplayRecord]:
            rows = conn.execute(
                "SELECT p.seq, p.attempts, p.last_error, COALESCE(e.data, p.data)"
                " FROM consumer_pending AS p"
                " LEFT JOIN events AS e ON e.seq = p.seq"
                " WHERE p.consumer = ? AND p.replay = 1 AND p.seq > ? ORDER BY p.seq LIMIT ?",
                (consumer, after, limit),
            ).fetchall()
            return [
                ReplayRecord(
                    int(r[0]),
                    _envelope(r[3]) if r[3] is not None else None,
                    int(r[1]),
                    str(r[2]),
                )
                for r in rows
            ]

        # On the writer, not the reader: queued after the consumer's handed-over progress,
        # so a replay it has finished is deleted before this read sees the table.
        return await self._write(op)

    async def count_dead_letters(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])

        return await self._read_settled(op)

    async def apply_retention(self, max_age_s: float, max_bytes: int) -> int:
        cutoff = _now_us() - int(max_age_s * 1_000_000)

        def op(conn: sqlite3.Connection) -> int:
            deleted = conn.execute("DELETE FROM events WHERE stored_at_us < ?", (cutoff,)).rowcount
            row = conn.execute(
                "SELECT MAX(seq) FROM (SELECT seq, SUM(size) OVER (ORDER BY seq DESC) AS total"
                " FROM events) WHERE total > ?",
                (max_bytes,),
            ).fetchone()
            if row and row[0] is not None:
                deleted += conn.execute("DELETE FROM events WHERE seq <= ?", (row[0],)).rowcount
            return int(deleted)

        return await self._write(op)
