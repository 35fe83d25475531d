"""What the JetStream store adds to the store contract: ids beyond JetStream's duplicate
window, consumer state and dead letters that outlive the store instance, and the settings
that choose it."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import nats
import pytest
from pydantic import ValidationError

from router.bus import BusSettings, create_bus
from router.bus.jetstream_store import JetStreamEventStore
from services.kit.events.client import build_envelope
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from soulspot.events.v1 import envelope_pb2
    from tests.helpers.nats_server import NatsServerProcess

WINDOW_S = 0.2


def _event(n: int) -> envelope_pb2.EventEnvelope:
    payload = download_pb2.DownloadStarted(
        download_id=f"d{n}", track=references_pb2.TrackReference(title=f"t{n}", artist="a")
    )
    return build_envelope(payload, source_module="folder")


async def _ids_recorded(store: JetStreamEventStore, event_id: str, deadline_s: float) -> None:
    # The ids bucket is written just after the publish ack: wait for it with a deadline.
    deadline = time.monotonic() + deadline_s
    while await store._lookup_id(event_id) is None:
        assert time.monotonic() < deadline, "the event's id was never recorded"
        await asyncio.sleep(0.01)


async def test_an_event_id_is_stored_once_after_the_duplicate_window_has_passed(
    nats_server: NatsServerProcess,
) -> None:
    store = JetStreamEventStore([nats_server.url], duplicate_window_s=WINDOW_S)
    await store.open()
    try:
        first = _event(1)
        (stored,) = await store.append([first], [None])
        await _ids_recorded(store, first.event_id, 10)
        # Past JetStream's own window only the ids bucket still knows the event.
        await asyncio.sleep(WINDOW_S * 3)
        again = _event(2)
        results = await store.append([again, first], [None, None])
        assert [r.duplicate for r in results] == [False, True]
        assert results[1].sequence == stored.sequence
        assert results[1].envelope.event_id == first.event_id
        # The retry's copy took a sequence of its own and was deleted: one copy is left.
        page = await store.read_after(0, 10)
        assert [e.event_id for e in page.events] == [first.event_id, again.event_id]
    finally:
        await store.close()


async def test_an_event_jetstream_calls_a_duplicate_has_its_id_recorded(
    nats_server: NatsServerProcess,
) -> None:
    # An earlier try stored it but its answer never came (as a batch's commit ack that timed
    # out): only JetStream's duplicate window knows it until the retry records its id.
    store = JetStreamEventStore([nats_server.url], duplicate_window_s=WINDOW_S * 5)
    await store.open()
    client = await nats.connect(nats_server.url)
    try:
        first = _event(1)
        ack = await client.jetstream().publish(
            f"{store.stream}.{first.event_type}",
            first.SerializeToString(),
            headers={"Nats-Msg-Id": first.event_id},
        )
        assert await store._lookup_id(first.event_id) is None
        (retried,) = await store.append([first], [None])
        assert (retried.duplicate, retried.sequence) == (True, ack.seq)
        await _ids_recorded(store, first.event_id, 10)
        # Past the window the ids bucket still knows it: no second copy.
        await asyncio.sleep(WINDOW_S * 6)
        (again,) = await store.append([first], [None])
        assert (again.duplicate, again.sequence) == (True, ack.seq)
        page = await store.read_after(0, 10)
        assert [e.event_id for e in page.events] == [first.event_id]
    finally:
        await client.close()
        await store.close()


async def test_consumer_state_and_dead_letters_are_read_back_by_a_fresh_store(
    nats_server: NatsServerProcess,
) -> None:
    store = JetStreamEventStore([nats_server.url])
    await store.open()
    try:
        results = await store.append([_event(n) for n in range(4)], [None] * 4)
        seqs = [r.sequence for r in results]
        await store.save_consumer("c", ["download.*"], 0, inactive_s=60, owner="spiffe://x")
        store.record_progress("c", seqs[0], done=[seqs[2]], cleared=[], replays_done=[])
        store.record_failure("c", seqs[1], 2, "boom", False)
        store.park("c", seqs[3], router_pb2.DEAD_LETTER_REASON_MAX_ATTEMPTS, 5, "still\nfailing")
        (letter,) = await store.list_dead_letters("c", 10)
        assert (letter.sequence, letter.attempts, letter.last_error) == (
            seqs[3],
            5,
            "still\nfailing",
        )
        assert letter.envelope.event_id == results[3].envelope.event_id
    finally:
        await store.close()

    fresh = JetStreamEventStore([nats_server.url])
    await fresh.open()
    try:
        record = await fresh.load_consumer("c")
        assert record is not None
        assert (record.floor, record.done_above_floor, record.owner) == (
            seqs[0],
            {seqs[2]},
            "spiffe://x",
        )
        assert record.pending[seqs[1]].attempts == 2
        assert await fresh.count_dead_letters() == 1
        assert await fresh.take_dead_letters([], "c") == {"c": 1}
        assert await fresh.count_dead_letters() == 0
        (replay,) = await fresh.read_replays("c", 0, 10)
        assert replay.sequence == seqs[3]
        assert replay.envelope is not None
        assert replay.envelope.event_id == results[3].envelope.event_id
        fresh.record_progress("c", seqs[0], done=[], cleared=[], replays_done=[seqs[3]])
        assert await fresh.read_replays("c", 0, 10) == []
    finally:
        await fresh.close()


def test_the_bus_settings_choose_the_jetstream_store_and_bound_its_settings() -> None:
    settings = BusSettings(
        backend="jetstream",
        nats_servers=["nats://a:4222", "nats://b:4222"],
        nats_stream="LOG",
        nats_replicas=3,
        retention_max_age_s=3600.0,
    )
    store = create_bus(settings).store
    assert isinstance(store, JetStreamEventStore)
    assert (store.servers, store.stream, store.replicas, store.max_age_s) == (
        ["nats://a:4222", "nats://b:4222"],
        "LOG",
        3,
        3600.0,
    )
    refused: list[dict[str, Any]] = [
        {"nats_replicas": 6},
        {"nats_servers": []},
        {"nats_stream": "a.b"},
    ]
    for bad in refused:
        with pytest.raises(ValidationError):
            BusSettings(**bad)


async def test_a_stores_tail_carries_the_events_another_store_appended_in_log_order(
    nats_server: NatsServerProcess,
) -> None:
    # Two routers on one stream: each one's subscribers are fed from the stream, so they
    # get the other's events too, and in log order, mixed with their own.
    here, there = JetStreamEventStore([nats_server.url]), JetStreamEventStore([nats_server.url])
    await here.open()
    await there.open()
    try:
        seen: list[int] = []
        await here.last_sequence()
        here.append_listener = lambda results: seen.extend(r.sequence for r in results)
        for n in range(10):
            store = here if n % 3 == 0 else there
            await store.append([_event(n), _event(100 + n)], [None, None])
        deadline = time.monotonic() + 10
        while len(seen) < 20:
            assert time.monotonic() < deadline, f"the tail got {seen}"
            await asyncio.sleep(0.01)
        assert seen == list(range(1, 21))
    finally:
        await there.close()
        await here.close()
