"""SQLite the way every store of the mesh uses it: WAL, an explicit sync level, transactions
begun explicitly (autocommit connection) and always ended, and, for a store used from the
event loop, all its work on one dedicated thread."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
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


class _Closable(Protocol):
    def close(self) -> None: ...


_S = TypeVar("_S", bound=_Closable)
_T = TypeVar("_T")


class StoreThread(Generic[_S]):
    """A synchronous store used from the event loop: opened on first use and called only on
    its own thread, so commits wait for the disk without stalling the loop and its one
    connection needs no locking."""

    def __init__(self, open_store: Callable[[], _S], *, thread_name: str) -> None:
        self._open_store = open_store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._store: _S | None = None

    async def call(self, fn: Callable[[_S], _T]) -> _T:
        """fn(store) on the store's thread (opening the store first if it is not yet)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._require()))

    def _require(self) -> _S:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    async def open(self) -> None:
        """Open the store now, so a bad path or schema fails at start, not on first use."""
        await self.call(lambda s: None)

    async def close(self) -> None:
        """Close the store (if open) on its thread, then end the thread."""

        def close() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)
