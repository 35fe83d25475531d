"""The kit's SQLite helpers: WAL with the asked sync level, transactions that always end, and
a store whose work all runs on its own thread."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from services.kit.support.sqlite import StoreThread, open_wal, transaction

if TYPE_CHECKING:
    from pathlib import Path


def test_open_wal_creates_folder_schema_and_settings(tmp_path: Path) -> None:
    db = open_wal(tmp_path / "a" / "b.sqlite3", synchronous="FULL", schema="CREATE TABLE t (x)")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    db.execute("INSERT INTO t VALUES (1)")
    db.close()


def test_transaction_commits_or_rolls_back(tmp_path: Path) -> None:
    db = open_wal(tmp_path / "t.sqlite3", synchronous="NORMAL", schema="CREATE TABLE t (x)")
    with transaction(db):
        db.execute("INSERT INTO t VALUES (1)")

    def fail_halfway() -> None:
        with transaction(db):
            db.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("halfway")

    with pytest.raises(RuntimeError):
        fail_halfway()
    assert [r[0] for r in db.execute("SELECT x FROM t")] == [1]
    assert not db.in_transaction
    db.close()


class _Store:
    def __init__(self) -> None:
        self.threads: list[str] = [threading.current_thread().name]
        self.closed = False

    def work(self) -> str:
        self.threads.append(threading.current_thread().name)
        return "done"

    def close(self) -> None:
        self.threads.append(threading.current_thread().name)
        self.closed = True


async def test_store_thread_opens_on_first_use_and_works_and_closes_on_its_own_thread() -> None:
    opened: list[_Store] = []

    def open_store() -> _Store:
        opened.append(_Store())
        return opened[-1]

    thread = StoreThread(open_store, thread_name="test-store")
    assert opened == []
    await thread.open()
    assert await thread.call(lambda s: s.work()) == "done"
    await thread.close()
    [store] = opened
    assert store.closed
    assert len(store.threads) == 3
    assert all(name.startswith("test-store") for name in store.threads)
    assert threading.current_thread().name not in store.threads
