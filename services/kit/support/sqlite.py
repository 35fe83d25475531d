"""SQLite the way every store of the mesh uses it: WAL, an explicit sync level, transactions
begun explicitly (autocommit connection) and always ended."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# NORMAL in WAL mode survives a process crash (kill -9); FULL also a power cut. Each store
# says which its acknowledgements promise.
Synchronous = Literal["NORMAL", "FULL"]


def open_wal(
    path: Path,
    *,
    synchronous: Synchronous,
    schema: str = "",
    busy_timeout_ms: int = 5000,
    row_factory: bool = False,
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) to a WAL database,
    created with its folder and schema when missing. Usable from any one thread at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    if row_factory:
        db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    if schema:
        db.executescript(schema)
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, *, immediate: bool = True) -> Iterator[None]:
    """BEGIN (IMMEDIATE: take the write lock now, so the transaction cannot fail to upgrade
    later) ... COMMIT, or ROLLBACK on any exception, which then propagates."""
    db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
