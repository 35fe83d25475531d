from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from router.bus import BusSettings, create_bus
from router.bus.__main__ import BusProcessSettings
from router.bus.sqlite_store import LAZY_COMMIT_S, ROWS_PER_INSERT, SqliteEventStore
from router.bus.store import Parking
from services.kit.events.client import build_envelope
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from pathlib import Path

    from soulspot.events.v1 import envelope_pb2


def _env(n: int) -> envelope_pb2.EventEnvelope:
    payload = download_pb2.DownloadStarted(
        download_id=f"d{n}", track=references_pb2.TrackReference(title="t", artist="a")
    )
    return build_envelope(payload, source_module="folder")


async def test_concurrent_appends_share_commits_and_get_unique_sequences(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "e.db")
    await store.open()
    try:
        envs = [_env(i) for i in range(200)]
        results = await asyncio.gather(*(store.append([e], [None]) for e in envs))
        seqs = sorted(r[0].sequence for r in results)
        assert seqs == list(range(1, 201))
        again = await store.append([envs[5]], [None])
        assert again[0].duplicate
        assert again[0].sequence == results[5][0].sequence
        assert await store.last_sequence() == 200
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "e.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 200
    conn.close()


async def test_a_duplicate_inside_one_commit_is_stored_once_and_the_rest_in_order(
    tmp_path: Path,
) -> None:
    # Appends that share a commit go in as multi-row INSERTs; a duplicate fails them,
    # and the usual path then stores the others and answers the duplicate.
    store = SqliteEventStore(tmp_path / "e.db")
    await store.open()
    try:
        first, second, third = _env(1), _env(2), _env(3)
        stored = await store.append([first], [None])
        results = await asyncio.gather(
            store.append([second, first], [None, None]), store.append([third], [None])
        )
        pair, single = results
        assert [(r.sequence, r.duplicate) for r in pair] == [(2, False), (1, True)]
        assert [(r.sequence, r.duplicate) for r in single] == [(3, False)]
        assert stored[0].sequence == 1
        page = await store.read_after(0, 10)
        assert [e.event_id for e in page.events] == [
            first.event_id,
            second.event_id,
            third.event_id,
        ]
        assert [e.sequence for e in page.events] == [1, 2, 3]
    finally:
        await store.close()


async def test_a_commit_bigger_than_one_insert_is_stored_whole_and_in_order(
    tmp_path: Path,
) -> None:
    store = SqliteEventStore(tmp_path / "e.db")
    await store.open()
    try:
        envs = [_env(i) for i in range(ROWS_PER_INSERT + 5)]
        results = await store.append(envs, [None] * len(envs))
        assert [r.sequence for r in results] == list(range(1, len(envs) + 1))
        assert await store.last_sequence() == len(envs)
        # A duplicate in the last INSERT rolls the earlier ones back too: the usual path
        # then stores the new events once and answers the duplicate.
        more = [_env(1000 + i) for i in range(ROWS_PER_INSERT + 5)] + [envs[0]]
        again = await store.append(more, [None] * len(more))
        assert [r.sequence for r in again[:-1]] == list(range(len(envs) + 1, len(envs) + len(more)))
        assert (again[-1].sequence, again[-1].duplicate) == (1, True)
        assert await store.last_sequence() == len(envs) + len(more) - 1
    finally:
        await store.close()


async def test_dead_letters_written_lazily_are_listed_at_once(tmp_path: Path) -> None:
    # Consumer bookkeeping waits for a commit to join (appends go alone as rows);
    # a query about it commits what is waiting first, so it never reads stale state.
    store = SqliteEventStore(tmp_path / "e.db")
    await store.open()
    try:
        await store.append([_env(1)], [None])
        store.park("worker", 1, router_pb2.DEAD_LETTER_REASON_MAX_ATTEMPTS, 3, "boom")
        await store.append([_env(2)], [None])
        letters = await store.list_dead_letters("worker", 10)
        assert [(d.sequence, d.attempts, d.last_error) for d in letters] == [(1, 3, "boom")]
    finally:
        await store.close()


async def test_parked_events_are_stored_but_not_read_for_delivery(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "e.db")
    await store.open()
    try:
        park = Parking(router_pb2.DEAD_LETTER_REASON_CYCLE, "loop")
        await store.append([_env(1), _env(2), _env(3)], [None, park, None])
        page = await store.read_after(0, 10)
        assert [e.sequence for e in page.events] == [1, 3]
        assert page.scanned_to == 3
        letters = await store.list_dead_letters("", 10)
        assert [(d.sequence, d.consumer, d.reason) for d in letters] == [
            (2, "", router_pb2.DEAD_LETTER_REASON_CYCLE)
        ]
    finally:
        await store.close()


async def test_retention_drops_the_oldest_beyond_the_size(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "e.db")
    await store.open()
    try:
        await store.append([_env(i) for i in range(10)], [None] * 10)
        one = len(_env(0).SerializeToString()) + 20
        deleted = await store.apply_retention(3600, one * 4)
        assert 5 <= deleted <= 7
        page = await store.read_after(0, 100)
        assert page.events[-1].sequence == 10
        assert await store.apply_retention(0, 1 << 30) == 10 - deleted
        # The sequence never goes back, even with an empty log.
        fresh = await store.append([_env(99)], [None])
        assert fresh[0].sequence == 11
    finally:
        await store.close()


async def test_lazy_bookkeeping_is_committed_in_time_under_steady_appends(tmp_path: Path) -> None:
    # Publishers that keep the writer's queue from ever running dry: the lazy writes' wait
    # never times out, and they must still reach the file within their time.
    store = SqliteEventStore(tmp_path / "e.db")
    await store.open()
    running = True
    counter = iter(range(1, 1_000_000))

    async def publisher() -> None:
        while running:
            await store.append([_env(next(counter))], [None])

    try:
        await store.append([_env(0)], [None])
        store.park("worker", 1, router_pb2.DEAD_LETTER_REASON_MAX_ATTEMPTS, 2, "late")
        publishers = [asyncio.create_task(publisher()) for _ in range(4)]
        await asyncio.sleep(LAZY_COMMIT_S * 3)
        conn = sqlite3.connect(tmp_path / "e.db")
        try:
            count = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        finally:
            conn.close()
        running = False
        await asyncio.gather(*publishers)
        assert count == 1
    finally:
        await store.close()


async def test_the_sync_level_of_the_settings_reaches_the_write_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite's numbering: 1 is NORMAL, 2 is FULL.
    levels = {}
    monkeypatch.setenv("SOULSPOT_BUS__SYNCHRONOUS", "NORMAL")
    for name, settings in (
        ("default", BusSettings()),
        ("env", BusProcessSettings().bus),
    ):
        bus = create_bus(settings, state_dir=tmp_path / name)
        await bus.start()
        try:
            store = bus.store
            assert isinstance(store, SqliteEventStore)
            levels[name] = await store._write(
                lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]
            )
            (result,) = await store.append([_env(1)], [None])
            assert result.sequence == 1
        finally:
            await bus.stop()
    assert levels == {"default": 2, "env": 1}
    with pytest.raises(ValidationError):
        BusSettings(synchronous="SOMETIMES")  # type: ignore[arg-type]


async def test_a_log_from_before_replays_carried_their_event_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE consumer_pending (consumer TEXT NOT NULL, seq INTEGER NOT NULL,"
        " attempts INTEGER NOT NULL, last_error TEXT NOT NULL, replay INTEGER NOT NULL,"
        " PRIMARY KEY (consumer, seq)) WITHOUT ROWID;"
        " INSERT INTO consumer_pending VALUES ('c', 7, 2, 'boom', 0);"
    )
    old.close()
    store = SqliteEventStore(path)
    await store.open()
    try:
        columns = await store._write(
            lambda conn: [r[1] for r in conn.execute("PRAGMA table_info(consumer_pending)")]
        )
        assert "data" in columns
        await store.save_consumer("c", ["*"], 0)
        record = await store.load_consumer("c")
        assert record is not None
        assert record.pending[7].attempts == 2
    finally:
        await store.close()
