"""Two buses on one JetStream serve each durable consumer from one of them at a time: the
other refuses its subscribers (UNAVAILABLE, naming the holder), a consumer moves with its
position once its subscribers leave, a stale lease is taken over after a whole lease, and kit
subscribers given both routers' addresses get every event once, ordering keys one at a time."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import TYPE_CHECKING

import grpc
import nats
import pytest

from router.bus.jetstream.records import consumer_token
from services.kit.events.client import EventHandlers, Subscriber
from services.kit.rpc.channel import open_channel
from soulspot.router.v1 import router_pb2
from tests.helpers.bus import RawSubscriber, envelope, started, wait_for
from tests.helpers.bus_nodes import Node, subscribed_once_free

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.js.kv import KeyValue

    from soulspot.events.v1 import download_pb2, envelope_pb2
    from tests.helpers.nats_server import NatsServerProcess

LEASE_S = 1.0
STREAM = "LEASES"


@pytest.fixture
async def nodes(nats_server: NatsServerProcess) -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    try:
        for _ in range(2):
            node = Node(nats_server.url, stream=STREAM, lease_s=LEASE_S)
            await node.start()
            started.append(node)
        yield started
    finally:
        for node in started:
            await node.stop()


@pytest.fixture
async def leases(nats_server: NatsServerProcess) -> AsyncIterator[KeyValue]:
    """The routers' consumer lease bucket, to plant or overwrite a lease as another router."""
    client = await nats.connect(nats_server.url)
    try:
        yield await client.jetstream().key_value(f"{STREAM}_CONSUMER_LEASES")
    finally:
        await client.close()


async def _refused_with(node: Node, consumer: str, within_s: float = 5.0) -> str:
    """The details of the UNAVAILABLE refusal a subscriber of `consumer` gets at `node`."""
    sub = RawSubscriber(node.stub, consumer, ["download.*"])
    task = asyncio.create_task(sub._run())
    try:
        async with asyncio.timeout(within_s):
            await task
    finally:
        await sub.close()
    assert not sub.subscribed.is_set(), "subscribed at the router that does not hold the lease"
    assert sub.error is not None
    assert sub.error.code() == grpc.StatusCode.UNAVAILABLE
    return sub.error.details() or ""


async def test_a_router_refuses_a_consumer_another_router_serves_and_names_it(
    nodes: list[Node],
) -> None:
    first, second = nodes
    async with RawSubscriber(first.stub, "shared", ["download.*"]):
        details = await _refused_with(second, "shared")
        holder = first.bus.store.consumer_leases  # type: ignore[attr-defined]
        assert holder.owner in details
        assert "SOULSPOT_BUS__CONSUMER_LEASE_S" in details
        # The holder itself still takes more subscribers of the consumer.
        async with RawSubscriber(first.stub, "shared", ["download.*"]) as again:
            assert again.error is None


async def test_a_consumer_moves_to_another_router_from_its_written_position(
    nodes: list[Node],
) -> None:
    first, second = nodes
    for n in range(5):
        await first.publish(envelope(started(f"d{n}")))
    async with RawSubscriber(first.stub, "mover", ["download.*"]) as sub:
        got = await sub.take(5)
        last = max(d.event.sequence for d in got)
        await wait_for(lambda: first.bus.consumers["mover"].floor == last)
    # Acked and gone: the router writes the position and lets the consumer go.
    for n in range(5, 8):
        await second.publish(envelope(started(f"d{n}")))
    # The release is written right after the stream ends: asked again until it is.
    moved = await subscribed_once_free(second, "mover")
    try:
        assert moved.acked_sequence == last
        rest = await moved.take(3)
        assert [d.event.sequence for d in rest] == sorted(d.event.sequence for d in rest)
        assert min(d.event.sequence for d in rest) > moved.acked_sequence
        assert await moved.nothing_within(0.3)
    finally:
        await moved.close()


async def test_a_stale_lease_is_taken_over_once_it_stood_still_for_a_whole_lease(
    nodes: list[Node], leases: KeyValue
) -> None:
    first = nodes[0]
    # A router that died holding the consumer: its lease is there and never renewed.
    dead = {"owner": "dead-router-1", "address": ""}
    await leases.create(consumer_token("orphan"), json.dumps(dead).encode())
    seen_at = asyncio.get_running_loop().time()
    assert "dead-router-1" in await _refused_with(first, "orphan")
    sub = await subscribed_once_free(first, "orphan", pause_s=0.1)
    try:
        # Not before the lease stood still for a whole lease on this router's clock.
        assert asyncio.get_running_loop().time() - seen_at >= LEASE_S
        entry = await leases.get(consumer_token("orphan"))
        holder = json.loads(entry.value or b"{}")
        assert holder["owner"] == first.bus.store.consumer_leases.owner  # type: ignore[attr-defined]
    finally:
        await sub.close()


async def test_kit_subscribers_on_both_routers_get_every_event_once_keys_one_at_a_time(
    nodes: list[Node],
) -> None:
    first, second = nodes
    handled: Counter[str] = Counter()
    busy: Counter[str] = Counter()
    overlaps: list[str] = []

    def handlers() -> EventHandlers:
        h = EventHandlers()

        @h.on("download.started")
        async def on_started(
            event: download_pb2.DownloadStarted, env: envelope_pb2.EventEnvelope
        ) -> None:
            key = env.ordering_key
            busy[key] += 1
            if busy[key] > 1:
                overlaps.append(key)
            await asyncio.sleep(0.002)
            busy[key] -= 1
            handled[env.event_id] += 1

        return h

    async def burst(first_n: int) -> list[str]:
        ids = []
        for n in range(first_n, first_n + 60):
            env = envelope(started(f"d{n}"))
            env.ordering_key = f"k{n % 4}"
            await nodes[n % 2].publish(env)
            ids.append(env.event_id)
        return ids

    addresses = {
        "first": first.server.address,
        "second": second.server.address,
        "both": f"{first.server.address},{second.server.address}",
    }
    channels = {name: open_channel(address) for name, address in addresses.items()}
    subs = {
        name: Subscriber(
            channel,
            consumer="pair",
            handlers=handlers(),
            start=router_pb2.START_POSITION_EARLIEST,
            max_backoff_s=0.3,
        )
        for name, channel in channels.items()
    }
    try:
        await subs["first"].start()
        await subs["first"].wait_connected(10)
        await subs["second"].start()  # refused while the first router serves the consumer
        await subs["both"].start()  # round robin: lands on the first router on some try
        await subs["both"].wait_connected(15)
        published = await burst(0)
        await wait_for(lambda: set(handled) >= set(published), within_s=30)
        assert not subs["second"].connected.is_set()
        assert "pair" not in second.bus.consumers
        # The first router's subscribers leave: the second router serves the consumer
        # from where they left it.
        await subs["first"].stop()
        await subs["both"].stop()
        await subs["second"].wait_connected(15)
        published += await burst(60)
        await wait_for(lambda: set(handled) >= set(published), within_s=30)
        assert [i for i, c in handled.items() if c > 1] == []
        assert overlaps == []
    finally:
        for sub in subs.values():
            await sub.stop()
        for channel in channels.values():
            await channel.close()


async def test_a_router_whose_lease_was_taken_stops_serving_the_consumer(
    nodes: list[Node], leases: KeyValue
) -> None:
    first = nodes[0]
    async with RawSubscriber(first.stub, "taken", ["download.*"]) as sub:
        assert sub._task is not None
        # Another router took the lease over (this one stalled past a lease, say).
        await leases.put(consumer_token("taken"), json.dumps({"owner": "other"}).encode())
        async with asyncio.timeout(5):
            await sub._task  # the stream ends: its subscriber goes to the new holder
        assert "taken" not in first.bus.consumers
        await first.publish(envelope(started("after")))
        assert sub.received == []
