"""The kit's SQLite helpers: WAL with the asked sync level, and transactions that always end."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from services.kit.support.sqlite import open_wal, transaction

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
