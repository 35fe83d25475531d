"""The promise every `EventStore` keeps: an acked append is durable and another reader sees it.

The bus answers a publish once the store's `append` returned, so the moment `append` returns
is the ack. At that moment the event must already be committed: readable by a reader that
shares nothing with the store (a second connection, a fresh store on the same files), at the
sync level the store promises. Every store runs these tests: the list `KINDS` has one entry
per implementation and level. The JetStream store runs against a real nats-server with its
files under the test's folder (FULL: `sync_interval: always`), read from outside over a
connection of its own.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import nats
import pytest

from router.bus.jetstream.direct import get_batch
from router.bus.jetstream.records import envelope_from
from router.bus.jetstream_store import JetStreamEventStore
from router.bus.sqlite_store import SqliteEventStore
from router.bus.store import Parking
from services.kit.events.client import build_envelope
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2
from soulspot.router.v1 import router_pb2
from tests.helpers.nats_server import NatsServerProcess, start_nats_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
    from pathlib import Path

    from nats.aio.client import Client

    from router.bus.store import AppendResult, EventStore
    from soulspot.events.v1 import envelope_pb2


class OtherReader(Protocol):
    """A reader that shares no connection, thread or cache with the store under test."""

    async def stored(self, event_ids: Sequence[str]) -> dict[str, int]:
        """The sequence of each of the events it can read, by event_id. It reads before it
        first awaits anything, so what it sees is the log at the moment it is called."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class StoreKind:
    """One store implementation at one sync level, and how to look at it from outside."""

    name: str
    level: str  # the sync level the store is opened with: "FULL" or "NORMAL"
    new_store: Callable[[Path], EventStore]  # a store on the files under the folder
    other_reader: Callable[[Path], OtherReader]  # a reader of the same files
    # The level the store's writes really run at, as the store's own write path sees it.
    writer_level: Callable[[EventStore], Awaitable[str]]


# -- SQLite --------------------------------------------------------------------------------

_SQLITE_LEVELS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class _SqliteReader:
    """A second SQLite connection, read-only, on the store's file."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)

    async def stored(self, event_ids: Sequence[str]) -> dict[str, int]:
        marks = ", ".join("?" * len(event_ids))
        rows = self._conn.execute(
            f"SELECT event_id, seq FROM events WHERE event_id IN ({marks})", list(event_ids)
        ).fetchall()
        return {str(event_id): int(seq) for event_id, seq in rows}

    async def close(self) -> None:
        self._conn.close()


async def _sqlite_writer_level(store: EventStore) -> str:
    assert isinstance(store, SqliteEventStore)
    level = await store._write(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
    return _SQLITE_LEVELS[int(level)]


def _sqlite(level: str) -> StoreKind:
    def new_store(folder: Path) -> EventStore:
        return SqliteEventStore(
            folder / "events.db", synchronous="FULL" if level == "FULL" else "NORMAL"
        )

    return StoreKind(
        name=f"sqlite-{level.lower()}",
        level=level,
        new_store=new_store,
        other_reader=lambda folder: _SqliteReader(folder / "events.db"),
        writer_level=_sqlite_writer_level,
    )


# -- JetStream -----------------------------------------------------------------------------

# The nats-server of each test folder, started by the first store on it, stopped after the test.
_NATS_SERVERS: dict[Path, NatsServerProcess] = {}


def _nats_server(folder: Path, level: str) -> NatsServerProcess:
    if folder not in _NATS_SERVERS:
        _NATS_SERVERS[folder] = start_nats_server(folder / "nats", sync_always=level == "FULL")
    return _NATS_SERVERS[folder]


@pytest.fixture(autouse=True)
def nats_servers_stopped() -> Iterator[None]:
    yield
    while _NATS_SERVERS:
        _NATS_SERVERS.popitem()[1].stop()


class _JetStreamReader:
    """Its own NATS connection, reading the stream from where its last read ended."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._nc: Client | None = None
        self._connecting: asyncio.Future[Client] | None = None
        self._seen: dict[str, int] = {}
        self._position = 0

    async def stored(self, event_ids: Sequence[str]) -> dict[str, int]:
        if self._nc is None:
            # Concurrent publishers call this at once: the first connects, the rest wait.
            self._connecting = self._connecting or asyncio.ensure_future(nats.connect(self._url))
            self._nc = await self._connecting
        while True:
            page = await get_batch(
                self._nc, "SOULSPOT_EVENTS", {"seq": self._position + 1, "batch": 256}, wait_s=5
            )
            for msg in page:
                self._seen[envelope_from(msg.data).event_id] = msg.sequence
            if len(page) < 256:
                break
            self._position = page[-1].sequence
        if page:
            self._position = page[-1].sequence
        return {i: self._seen[i] for i in event_ids if i in self._seen}

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()


async def _jetstream_writer_level(store: EventStore) -> str:
    # The level is the server's: FULL when it syncs every write before the publish ack.
    assert isinstance(store, JetStreamEventStore)
    server = next(s for s in _NATS_SERVERS.values() if s.url in store.servers)
    return "FULL" if "sync_interval: always" in server.config.config_path.read_text() else "NORMAL"


def _jetstream(level: str) -> StoreKind:
    def new_store(folder: Path) -> EventStore:
        server = _nats_server(folder, level)
        return JetStreamEventStore(
            [server.url], synchronous="FULL" if level == "FULL" else "NORMAL"
        )

    return StoreKind(
        name=f"jetstream-{level.lower()}",
        level=level,
        new_store=new_store,
        other_reader=lambda folder: _JetStreamReader(_nats_server(folder, level).url),
        writer_level=_jetstream_writer_level,
    )


KINDS = [_sqlite("FULL"), _sqlite("NORMAL"), _jetstream("FULL"), _jetstream("NORMAL")]


# -- the contract --------------------------------------------------------------------------


@pytest.fixture(params=KINDS, ids=[kind.name for kind in KINDS])
def kind(request: pytest.FixtureRequest) -> StoreKind:
    found: StoreKind = request.param
    return found


@pytest.fixture
async def store(kind: StoreKind, tmp_path: Path) -> AsyncIterator[EventStore]:
    opened = kind.new_store(tmp_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def reader(kind: StoreKind, store: EventStore, tmp_path: Path) -> AsyncIterator[OtherReader]:
    # Opened after the store, which creates the files.
    other = kind.other_reader(tmp_path)
    try:
        yield other
    finally:
        await other.close()


def _event(n: int) -> envelope_pb2.EventEnvelope:
    payload = download_pb2.DownloadStarted(
        download_id=f"d{n}", track=references_pb2.TrackReference(title=f"t{n}", artist="a")
    )
    return build_envelope(payload, source_module="folder")


def _acked(
    results: Sequence[AppendResult], envelopes: Sequence[envelope_pb2.EventEnvelope]
) -> dict[str, int]:
    return {env.event_id: r.sequence for env, r in zip(envelopes, results, strict=True)}


async def test_the_store_writes_at_the_level_it_was_opened_with(
    kind: StoreKind, store: EventStore
) -> None:
    # FULL syncs every commit before the ack (survives a power cut), NORMAL at checkpoints:
    # the promise below is only as good as the level that reached the writer.
    assert await kind.writer_level(store) == kind.level


async def test_every_acked_event_is_readable_by_another_reader_when_the_ack_arrives(
    store: EventStore, reader: OtherReader
) -> None:
    # Concurrent publishers share commits (group commit), as they do in the bus; each one
    # looks at its event from outside the moment its append returns.
    publishers, per_publisher = 8, 60
    missing: list[str] = []
    acked: dict[str, int] = {}

    async def publish(first: int) -> None:
        for n in range(first, first + per_publisher):
            env = _event(n)
            (result,) = await store.append([env], [None])
            seen = await reader.stored([env.event_id])
            if seen.get(env.event_id) != result.sequence:
                missing.append(env.event_id)
            acked[env.event_id] = result.sequence

    await asyncio.gather(*(publish(p * per_publisher) for p in range(publishers)))
    assert missing == []
    assert len(acked) == publishers * per_publisher
    assert sorted(acked.values()) == list(range(1, publishers * per_publisher + 1))


async def test_acked_batches_with_parked_events_and_duplicates_are_readable_at_the_ack(
    store: EventStore, reader: OtherReader
) -> None:
    # Parked events and duplicates take the store's other write path (a transaction of
    # statements, not one multi-row insert); its acks keep the same promise.
    park = Parking(router_pb2.DEAD_LETTER_REASON_CYCLE, "loop")
    earlier = _event(0)
    (first_result,) = await store.append([earlier], [None])
    missing: list[str] = []

    async def publish(first: int) -> None:
        for n in range(first, first + 100, 2):
            batch = [_event(n), _event(n + 1), earlier]
            results = await store.append(batch, [None, park, None])
            seen = await reader.stored([e.event_id for e in batch])
            if seen != _acked(results, batch):
                missing.extend(e.event_id for e in batch if seen.get(e.event_id) is None)
            assert [r.duplicate for r in results] == [False, False, True]
            assert results[2].sequence == first_result.sequence
            assert results[1].parked

    await asyncio.gather(*(publish(p * 100 + 1) for p in range(4)))
    assert missing == []


async def test_acked_events_are_read_back_whole_by_a_fresh_store_on_the_same_files(
    kind: StoreKind, tmp_path: Path
) -> None:
    store = kind.new_store(tmp_path)
    await store.open()
    envelopes = [_event(n) for n in range(50)]
    # A second instance while the first still runs (nothing flushed by a close), then one
    # after the first closed: both read every acked event, as it was sent.
    try:
        results = await asyncio.gather(*(store.append([e], [None]) for e in envelopes))
        acked = {env.event_id: r.sequence for env, (r,) in zip(envelopes, results, strict=True)}
        await _assert_fresh_store_reads(kind, tmp_path, envelopes, acked)
    finally:
        await store.close()
    await _assert_fresh_store_reads(kind, tmp_path, envelopes, acked)


async def _assert_fresh_store_reads(
    kind: StoreKind,
    folder: Path,
    envelopes: Sequence[envelope_pb2.EventEnvelope],
    acked: dict[str, int],
) -> None:
    fresh = kind.new_store(folder)
    await fresh.open()
    try:
        page = await fresh.read_after(0, 1000)
    finally:
        await fresh.close()
    assert {e.event_id: e.sequence for e in page.events} == acked
    by_id = {e.event_id: e for e in page.events}
    for sent in envelopes:
        read = by_id[sent.event_id]
        assert (read.event_type, read.payload) == (sent.event_type, sent.payload)
