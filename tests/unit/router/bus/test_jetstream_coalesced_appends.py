"""The JetStream store's appends of one loop turn go together (one id lookup, one atomic
batch), while each append keeps its own answer: its sequences, its duplicates, its own
failure."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nats.errors import MaxPayloadError

from router.bus.jetstream_store import JetStreamEventStore
from services.kit.events.client import build_envelope
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2

if TYPE_CHECKING:
    from router.bus.store import AppendResult
    from soulspot.events.v1 import envelope_pb2
    from tests.helpers.nats_server import NatsServerProcess


def _event(n: int, title: str = "") -> envelope_pb2.EventEnvelope:
    payload = download_pb2.DownloadStarted(
        download_id=f"d{n}", track=references_pb2.TrackReference(title=title or f"t{n}", artist="a")
    )
    return build_envelope(payload, source_module="folder")


async def _opened(url: str) -> tuple[JetStreamEventStore, list[list[AppendResult]]]:
    store = JetStreamEventStore([url])
    await store.open()
    handed: list[list[AppendResult]] = []
    await store.last_sequence()
    store.append_listener = handed.append
    return store, handed


async def test_appends_of_one_loop_turn_are_stored_in_call_order_each_with_its_answer(
    nats_server: NatsServerProcess,
) -> None:
    store, handed = await _opened(nats_server.url)
    try:
        a, b, c = _event(1), _event(2), _event(3)
        first, second = await asyncio.gather(
            store.append([a], [None]), store.append([b, c], [None, None])
        )
        assert [r.sequence for r in first + second] == [1, 2, 3]
        assert [r.envelope.event_id for r in first + second] == [
            a.event_id,
            b.event_id,
            c.event_id,
        ]
        # The listener is offered each once, in log order (at the ack, or by the feed).
        assert [r.sequence for batch in handed for r in batch] == [1, 2, 3]
    finally:
        await store.close()


async def test_a_coalesced_append_that_fails_fails_alone_and_repeats_answer_the_first_copy(
    nats_server: NatsServerProcess,
) -> None:
    store, _handed = await _opened(nats_server.url)
    try:
        a, b = _event(1), _event(2)
        # Larger than the server takes in one message (the mesh's nodes: 8 MB).
        too_large = _event(3, title="x" * (8 * 1024 * 1024 + 1))
        outcomes = await asyncio.gather(
            store.append([a], [None]),
            store.append([too_large], [None]),
            store.append([b], [None]),
            store.append([a], [None]),  # the same event again, in the same turn
            return_exceptions=True,
        )
        stored_a, refused, stored_b, again = outcomes
        assert isinstance(refused, MaxPayloadError)
        assert isinstance(stored_a, list)
        assert isinstance(stored_b, list)
        assert isinstance(again, list)
        assert not stored_a[0].duplicate
        assert not stored_b[0].duplicate
        assert stored_b[0].sequence > stored_a[0].sequence
        assert again[0].duplicate
        assert again[0].sequence == stored_a[0].sequence
        page = await store.read_after(0, 10)
        assert [e.event_id for e in page.events] == [a.event_id, b.event_id]
    finally:
        await store.close()
