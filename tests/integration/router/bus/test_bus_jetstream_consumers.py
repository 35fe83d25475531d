"""On JetStream each durable bus consumer is a JetStream durable pull consumer: its filter
subjects are the patterns, JetStream counts its attempts across routers (a router that dies
mid-delivery leaves its events to the next, attempts counted; one that died during the last
attempt leaves the event to be parked on arrival), and a deletion or a replay through one
router reaches the router that serves the consumer (a deletion even while its subscribers
are saturated). An idle consumer costs its router one pull request at a time and no
consumer-info requests."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import nats
import pytest
from nats.js.errors import NotFoundError

from router.bus.jetstream.pull_consumer import durable_name
from soulspot.router.v1 import event_bus_pb2, router_pb2
from tests.helpers.bus import (
    RawSubscriber,
    completed,
    envelope,
    started,
    wait_for,
)
from tests.helpers.bus_nodes import Node, subscribed_once_free

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

    from tests.helpers.nats_server import NatsServerProcess

LEASE_S = 1.0
STREAM = "DURABLES"


def _node(nats_url: str, **overrides: Any) -> Node:
    return Node(
        nats_url,
        stream=STREAM,
        lease_s=LEASE_S,
        name_as_served=True,
        # Status looks at the other routers' consumers this often.
        metrics_interval_s=0.2,
        **overrides,
    )


@pytest.fixture
async def nodes(nats_server: NatsServerProcess) -> AsyncIterator[list[Node]]:
    started_nodes: list[Node] = []
    try:
        for _ in range(2):
            node = _node(nats_server.url)
            await node.start()
            started_nodes.append(node)
        yield started_nodes
    finally:
        for node in started_nodes:
            await node.stop()


@pytest.fixture
async def js(nats_server: NatsServerProcess) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(nats_server.url)
    try:
        yield client.jetstream()
    finally:
        await client.close()


async def _subscribed_once_free(node: Node, consumer: str, **options: Any) -> RawSubscriber:
    return await subscribed_once_free(node, consumer, within_s=15, pause_s=0.1, **options)


async def test_the_jetstream_consumer_filters_by_the_patterns(
    nodes: list[Node], js: JetStreamContext
) -> None:
    first = nodes[0]
    async with RawSubscriber(first.stub, "filtered", ["download.*", "library.**"]):
        info = await js.consumer_info(STREAM, durable_name("filtered"))
        assert sorted(info.config.filter_subjects or []) == [
            f"{STREAM}.download.*",
            f"{STREAM}.library.>",
        ]
        assert info.config.max_ack_pending == first.bus.settings.page_size
        assert info.config.max_deliver == first.bus.settings.default_max_attempts + 1
    # A pattern NATS cannot say takes the whole stream; the bus checks the patterns itself.
    async with RawSubscriber(first.stub, "inner", ["**.started"]) as sub:
        info = await js.consumer_info(STREAM, durable_name("inner"))
        assert info.config.filter_subject == f"{STREAM}.>"
        await first.publish(envelope(completed("skipped")))
        await first.publish(envelope(started("d1")))
        delivery = await sub.next()
        assert delivery.event.event_type == "download.started"
        assert await sub.nothing_within(0.3)


async def test_a_later_subscriber_changes_the_filter_and_max_deliver_not_the_position(
    nodes: list[Node], js: JetStreamContext
) -> None:
    first = nodes[0]
    async with RawSubscriber(first.stub, "changing", ["download.*"], max_attempts=3) as sub:
        published = await first.publish(envelope(started("before")))
        await sub.next()
        # Acked by the time the stream ends (an ack still on its way then is a failure).
        await wait_for(lambda: first.bus.consumers["changing"].in_flight == 0)
    await wait_for(lambda: "changing" not in first.bus.consumers)

    async def acked_by_jetstream() -> bool:
        # The router settles with JetStream without waiting for an answer.
        info = await js.consumer_info(STREAM, durable_name("changing"))
        return bool(info.ack_floor.stream_seq == published.sequence)

    await wait_for(acked_by_jetstream, within_s=10)
    info = await js.consumer_info(STREAM, durable_name("changing"))
    acked = info.ack_floor.stream_seq
    assert info.config.max_deliver == 4
    async with RawSubscriber(first.stub, "changing", ["library.**"], max_attempts=7) as sub:
        info = await js.consumer_info(STREAM, durable_name("changing"))
        assert info.config.filter_subject == f"{STREAM}.library.>"
        assert info.config.max_deliver == 8
        assert info.ack_floor.stream_seq == acked
        assert sub.acked_sequence == acked


async def test_a_killed_routers_unacked_events_reach_the_next_router_with_attempts_counted(
    nodes: list[Node],
) -> None:
    first, second = nodes
    sub = await _subscribed_once_free(first, "moving", auto_ack=False)
    for n in range(3):
        await first.publish(envelope(started(f"d{n}")))
    got = await sub.take(3)
    assert [d.attempt for d in got] == [1, 1, 1]
    await first.kill()
    await sub.close()
    again = await _subscribed_once_free(second, "moving")
    try:
        redelivered = await again.take(3, within_s=15)
        assert sorted(d.event.event_id for d in redelivered) == sorted(
            d.event.event_id for d in got
        )
        assert [d.attempt for d in redelivered] == [2, 2, 2]
    finally:
        await again.close()


async def test_an_event_whose_router_died_during_its_last_attempt_is_parked_on_arrival(
    nodes: list[Node],
) -> None:
    first, second = nodes
    sub = await _subscribed_once_free(first, "last-try", max_attempts=1, auto_ack=False)
    await first.publish(envelope(started("doomed")))
    (delivery,) = await sub.take(1)
    assert delivery.attempt == 1
    await first.kill()
    await sub.close()
    again = await _subscribed_once_free(second, "last-try", max_attempts=1)
    try:

        async def parked() -> bool:
            letters = await second.stub.ListDeadLetters(
                router_pb2.ListDeadLettersRequest(consumer="last-try"), timeout=5
            )
            return len(letters.dead_letters) == 1

        await wait_for(parked, within_s=15)
        assert again.received == []
    finally:
        await again.close()


async def test_a_page_of_nacked_events_keeps_being_redelivered_until_dead_lettered(
    nats_server: NatsServerProcess,
) -> None:
    # Nacked events stay in memory until JetStream gives them back: with a page of them,
    # the consumer must still ask for their redelivery.
    node = _node(nats_server.url, page_size=4)
    await node.start()
    try:
        async with RawSubscriber(
            node.stub, "nacking", ["download.*"], max_attempts=3, auto_ack=False
        ) as sub:
            for n in range(10):
                await node.publish(envelope(started(f"n{n}")))

            async def nack_all() -> None:
                while True:
                    delivery = await sub.deliveries.get()
                    sub.nack(delivery.delivery_id)

            nacker = asyncio.create_task(nack_all())

            async def all_parked() -> bool:
                letters = await node.stub.ListDeadLetters(
                    router_pb2.ListDeadLettersRequest(consumer="nacking"), timeout=5
                )
                return len(letters.dead_letters) == 10

            try:
                await wait_for(all_parked, within_s=30, step_s=0.1)
            finally:
                nacker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await nacker
            assert len(sub.received) == 30
            assert sorted(d.attempt for d in sub.received) == [1] * 10 + [2] * 10 + [3] * 10
    finally:
        await node.stop()


async def test_deleting_a_consumer_through_another_router_ends_its_streams(
    nodes: list[Node], js: JetStreamContext
) -> None:
    first, second = nodes
    sub = await _subscribed_once_free(first, "doomed")
    assert sub._task is not None
    response = await second.stub.DeleteConsumer(
        event_bus_pb2.DeleteConsumerRequest(consumer="doomed"), timeout=10
    )
    assert response.deleted
    with pytest.raises(NotFoundError):
        await js.consumer_info(STREAM, durable_name("doomed"))
    async with asyncio.timeout(10):
        await asyncio.shield(sub._task)  # the serving router ended the stream
    assert "doomed" not in first.bus.consumers
    await sub.close()


async def test_deleting_a_consumer_whose_subscribers_are_saturated_ends_their_streams(
    nodes: list[Node],
) -> None:
    first, second = nodes
    for n in range(4):
        await first.publish(envelope(started(f"full{n}")))
    # Two in flight, never acked: the router has no room, so no pull is out to be ended
    # by the deletion; its lease renewal tick looks at the consumer instead.
    sub = RawSubscriber(first.stub, "saturated", ["download.*"], max_in_flight=2, auto_ack=False)
    sub._task = asyncio.create_task(sub._run())
    try:
        await sub.take(2)
        response = await second.stub.DeleteConsumer(
            event_bus_pb2.DeleteConsumerRequest(consumer="saturated"), timeout=10
        )
        assert response.deleted
        # Within a few lease renewal ticks (a third of a lease each), long before the
        # subscriber's ack timeout (30 s) could end anything.
        async with asyncio.timeout(5 * LEASE_S):
            await asyncio.shield(sub._task)
        assert "saturated" not in first.bus.consumers
    finally:
        await sub.close()


async def test_an_idle_consumer_costs_pull_requests_and_no_consumer_info_requests(
    nodes: list[Node], nats_server: NatsServerProcess
) -> None:
    first = nodes[0]
    durable = durable_name("idle")
    spy = await nats.connect(nats_server.url)
    pulls: list[float] = []
    infos: list[float] = []

    async def on_pull(_msg: Msg) -> None:
        pulls.append(asyncio.get_running_loop().time())

    async def on_info(_msg: Msg) -> None:
        infos.append(asyncio.get_running_loop().time())

    try:
        # JetStream's API subjects are plain subjects: another client sees the requests.
        await spy.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}", cb=on_pull)
        await spy.subscribe(f"$JS.API.CONSUMER.INFO.{STREAM}.{durable}", cb=on_info)
        await spy.flush()
        async with RawSubscriber(first.stub, "idle", ["download.*"]):
            # Each pull waits for events for PULL_WAIT_S; over several, and several lease
            # renewal ticks (a third of a lease each), nothing else is asked.
            await wait_for(lambda: len(pulls) >= 4, within_s=15)
            since_first_pull = [t for t in infos if t > pulls[0]]
            assert since_first_pull == []
            assert pulls[-1] - pulls[0] > 2 * LEASE_S
    finally:
        await spy.close()


async def test_a_replay_queued_through_another_router_reaches_the_serving_one(
    nodes: list[Node],
) -> None:
    first, second = nodes
    sub = await _subscribed_once_free(first, "replayed", max_attempts=1, auto_ack=False)
    try:
        await first.publish(envelope(started("retry-me")))
        (delivery,) = await sub.take(1)
        sub.nack(delivery.delivery_id, "broken")

        async def parked() -> bool:
            letters = await second.stub.ListDeadLetters(
                router_pb2.ListDeadLettersRequest(consumer="replayed"), timeout=5
            )
            return len(letters.dead_letters) == 1

        await wait_for(parked, within_s=10)
        replayed = await second.stub.ReplayDeadLetters(
            router_pb2.ReplayDeadLettersRequest(consumer="replayed"), timeout=10
        )
        assert replayed.replayed == 1
        again = await sub.next(within_s=10)
        assert again.event.event_id == delivery.event.event_id
    finally:
        await sub.close()


async def test_status_from_any_router_lists_a_consumer_with_its_router_and_position(
    nodes: list[Node],
) -> None:
    first, second = nodes
    async with RawSubscriber(first.stub, "shown", ["download.*"]) as sub:
        published = await first.publish(envelope(started("s1")))
        await sub.next()
        # Named as the serving router names itself in its status (answered_by).
        holder = first.server.address

        def listed() -> bool:
            infos = {c.name: c for c in second.bus.consumers_info()}
            info = infos.get("shown")
            return (
                info is not None
                and info.acked_sequence == published.sequence
                and info.served_by == holder
            )

        await wait_for(listed, within_s=10)
        (info,) = [c for c in second.bus.consumers_info() if c.name == "shown"]
        assert list(info.event_types) == ["download.*"]
        assert info.lag == 0
