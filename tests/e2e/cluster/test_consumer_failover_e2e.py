"""A durable consumer served by one of two router processes on one JetStream: kill -9 of the
router serving it during a publish burst, and the other router takes it over once its lease
stood still: every acked event is delivered, and the consumer goes on from no earlier than
the position last written for it."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import nats
import pytest

from router.bus.jetstream.pull_consumer import durable_name
from router.bus.jetstream.records import consumer_token
from services.kit.events.client import RouterPublisher, Subscriber
from services.kit.events.retrying_publisher import RetryingPublisher
from services.kit.rpc.channel import open_channel
from soulspot.events.v1 import download_pb2
from tests.helpers.router_cluster import every_router, recorded_progress, start_routers

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.helpers.nats_server import NatsServerProcess
    from tests.helpers.processes import Process

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

STREAM = "SOULSPOT_EVENTS"
CONSUMER = "failover"
EVENTS = 240


@pytest.fixture
def routers(tmp_path: Path, nats_server: NatsServerProcess) -> Iterator[list[Process]]:
    started = start_routers(tmp_path, [nats_server.url], SOULSPOT_BUS__CONSUMER_LEASE_S="2")
    try:
        yield started
    finally:
        for router in started:
            router.stop()


async def _holder_and_floor(url: str) -> tuple[int, int]:
    """The pid of the router holding the consumer's lease, and the consumer's position."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        lease = await (await js.key_value(f"{STREAM}_CONSUMER_LEASES")).get(
            consumer_token(CONSUMER)
        )
        owner = json.loads(lease.value or b"{}")["owner"]
        # The consumer's position is its JetStream consumer's ack floor.
        info = await js.consumer_info(STREAM, durable_name(CONSUMER))
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        return int(owner.rsplit("-", 2)[1]), int(floor)
    finally:
        await client.close()


async def test_the_other_router_takes_a_consumer_over_when_its_router_is_killed(
    routers: list[Process], nats_server: NatsServerProcess
) -> None:
    both = every_router(routers)
    handlers, delivered = recorded_progress()

    # The position each Subscribe stream started from, as its router answered.
    starts: list[int] = []
    killed = asyncio.Event()

    async with open_channel(both, transport=routers[0].client) as channel:
        subscriber = Subscriber(channel, consumer=CONSUMER, handlers=handlers, max_backoff_s=0.5)

        async def watch_starts() -> None:
            while True:
                await subscriber.connected.wait()
                if killed.is_set():
                    starts.append(subscriber.acked_sequence)
                while subscriber.connected.is_set():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch_starts())
        await subscriber.start()
        await subscriber.wait_connected(20)
        publish = RetryingPublisher(RouterPublisher(channel, deadline_s=3.0), max_backoff_s=0.5)
        acked: list[str] = []
        floor_before = 0
        try:
            async with asyncio.timeout(60):
                for n in range(EVENTS):
                    payload = download_pb2.DownloadProgress(download_id=f"dl-{n}", percent=1.0)
                    acked.append((await publish.publish(payload)).event_id)
                    if n == EVENTS // 3:
                        # Let some acks be written, then kill the router serving the consumer.
                        while len(delivered) < n // 2:  # noqa: ASYNC110
                            await asyncio.sleep(0.01)
                        pid, floor_before = await _holder_and_floor(nats_server.url)
                        while floor_before == 0:  # the first acks' write is on its way
                            await asyncio.sleep(0.05)
                            pid, floor_before = await _holder_and_floor(nats_server.url)
                        (serving,) = [r for r in routers if r.popen.pid == pid]
                        serving.kill()
                        killed.set()
            async with asyncio.timeout(40):
                while not delivered >= set(acked):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # deliveries arrive on the subscriber's stream
        finally:
            watcher.cancel()
            await subscriber.stop()
    assert len(acked) == EVENTS
    assert not set(acked) - delivered
    assert starts, "the subscriber never came back after the kill"
    assert min(starts) >= floor_before > 0
