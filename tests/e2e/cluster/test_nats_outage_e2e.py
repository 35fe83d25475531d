"""Routers that ride out NATS trouble, as real processes on a real nats-server: a router started
before its NATS serves NOT_SERVING (saying what it waits for) and then SERVING once NATS is up;
a router whose NATS goes away after start serves its NATS-backed services NOT_SERVING (itself
SERVING) until NATS is back; a NATS stalled for longer than a consumer lease makes the router
serving that consumer let it go, and the other router serves it afterwards with every acked
event delivered and the consumer's written position never rewound."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from typing import TYPE_CHECKING

import grpc
import nats
import pytest
from grpc_health.v1 import health_pb2

from router.bus import event_bus
from router.bus.jetstream.pull_consumer import durable_name
from router.bus.jetstream.records import consumer_token
from router.bus.jetstream.startup import START_BACKOFF
from router.pipeline import engine
from router.watches import service as watches_service
from services.kit.events.client import RouterPublisher, Subscriber
from services.kit.events.retrying_publisher import RetryingPublisher
from services.kit.rpc.channel import HEALTH_CHECK_METHOD, open_channel, wait_for_ready
from soulspot.events.v1 import download_pb2
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2, status_pb2_grpc
from tests.helpers.bus import envelope
from tests.helpers.nats_server import node_config, start_nats_server, start_node
from tests.helpers.router_cluster import (
    publish_until_delivered,
    recorded_progress,
    start_jetstream_router,
    start_routers,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

    from tests.helpers.nats_server import NatsServerProcess
    from tests.helpers.processes import Process

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

STREAM = "SOULSPOT_EVENTS"
CONSUMER = "outage"
LEASE_S = 2.0
# Connecting, creating the streams and buckets, starting the pipeline: on a loaded machine.
READY_MARGIN_S = 15.0


async def _health(channel: grpc.aio.Channel, service: str = "") -> int | None:
    """The router's health status of `service` (overall by default), None while it does not
    answer."""
    check = channel.unary_unary(
        HEALTH_CHECK_METHOD,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    try:
        reply = await check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
    except grpc.aio.AioRpcError:
        return None
    return int(reply.status)


async def test_a_router_started_before_its_nats_serves_once_nats_is_up(tmp_path: Path) -> None:
    node = node_config(tmp_path / "nats")
    router = start_jetstream_router(tmp_path, [node.url])
    server: NatsServerProcess | None = None
    try:
        async with open_channel(router.address, transport=router.client) as channel:
            async with asyncio.timeout(30):
                while (status := await _health(channel)) is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING

            reply = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                router_pb2.GetStatusRequest(), timeout=5
            )
            waiting = [w.status for w in reply.warnings if w.operation == "event bus"]
            assert waiting
            assert waiting[0].startswith(
                "the event log (JetStream) is not reachable from this router since "
            )
            assert node.url not in waiting[0]  # the servers are in the logs only

            bus = event_bus_pb2_grpc.EventBusServiceStub(channel)
            payload = download_pb2.DownloadProgress(download_id="early", percent=1.0)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await bus.Publish(router_pb2.PublishRequest(event=envelope(payload)), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert (refused.value.details() or "") == waiting[0]

            server = start_node(node)
            began = time.monotonic()
            await wait_for_ready(
                router.address, START_BACKOFF.cap_s + READY_MARGIN_S, transport=router.client
            )
            took = time.monotonic() - began

            handlers, delivered = recorded_progress()
            subscriber = Subscriber(channel, consumer="after-outage", handlers=handlers)
            await subscriber.start()
            try:
                await publish_until_delivered(channel, subscriber, delivered, payload)
            finally:
                await subscriber.stop()
    finally:
        router.stop()
        if server is not None:
            server.stop()
    print(f"router SERVING {took:.1f}s after nats-server started")
    assert any("waiting for JetStream at" in line for line in router.log_lines())


def test_a_router_exits_with_the_reason_after_its_start_wait(tmp_path: Path) -> None:
    node = node_config(tmp_path / "nats")  # never started
    router = start_jetstream_router(tmp_path, [node.url], SOULSPOT_BUS__NATS_START_WAIT_S="1")
    try:
        code = router.popen.wait(30)
    finally:
        router.stop()
    assert code != 0
    assert any(f"no JetStream at {node.url} after" in line for line in router.log_lines())


async def test_a_router_whose_nats_goes_serves_its_bus_not_serving_until_it_is_back(
    tmp_path: Path,
) -> None:
    node = node_config(tmp_path / "nats")
    server = start_node(node)
    router = start_jetstream_router(tmp_path, [node.url])
    serving = health_pb2.HealthCheckResponse.SERVING
    needs_nats = [event_bus.SERVICE_NAME, engine.SERVICE_NAME, watches_service.SERVICE_NAME]
    try:
        await wait_for_ready(router.address, READY_MARGIN_S, transport=router.client)
        async with open_channel(router.address, transport=router.client) as channel:

            async def statuses() -> list[int | None]:
                return [await _health(channel, service) for service in needs_nats]

            assert await statuses() == [serving] * 3
            server.stop()  # its connections close: the router hears at once
            async with asyncio.timeout(READY_MARGIN_S):
                while serving in await statuses():  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            assert await _health(channel) == serving
            reply = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                router_pb2.GetStatusRequest(), timeout=5
            )
            (warning,) = [w.status for w in reply.warnings if w.operation == "event bus"]
            assert warning.startswith(
                "the event log (JetStream) is not reachable from this router since "
            )
            assert node.url not in warning

            server = start_node(node)
            began = time.monotonic()
            async with asyncio.timeout(READY_MARGIN_S):
                while await statuses() != [serving] * 3:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            print(f"NATS-backed services SERVING {time.monotonic() - began:.1f}s after NATS")
    finally:
        router.stop()
        server.stop()
    assert any("unreachable since" in line for line in router.log_lines())


@pytest.fixture
def nats_node(tmp_path: Path) -> Iterator[NatsServerProcess]:
    server = start_nats_server(tmp_path / "nats")
    try:
        yield server
    finally:
        # A stopped process cannot take SIGTERM: let it go on first.
        if server.popen.poll() is None:
            os.kill(server.popen.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def two_routers(tmp_path: Path, nats_node: NatsServerProcess) -> Iterator[list[Process]]:
    started = start_routers(
        tmp_path,
        [nats_node.url],
        SOULSPOT_BUS__CONSUMER_LEASE_S=str(LEASE_S),
        SOULSPOT_BUS__NATS_REQUEST_TIMEOUT_S="1",
    )
    try:
        yield started
    finally:
        for router in started:
            router.stop()


async def _record_floors(js: JetStreamContext, floors: list[int]) -> None:
    """The consumer's position (its JetStream durable's ack floor) as it moves, read every
    0.1 s while NATS answers: a stale write of a router that lost the consumer would show as
    a floor that went back."""
    durable = durable_name(CONSUMER)
    while True:
        with contextlib.suppress(Exception):  # NATS stalled: the next read
            info = await js.consumer_info(STREAM, durable, timeout=0.5)
            floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
            if not floors or floors[-1] != floor:
                floors.append(floor or 0)
        await asyncio.sleep(0.1)


async def _publish_until_all_delivered(
    channel: grpc.aio.Channel, tag: str, acked: list[str], delivered: set[str], deadline_s: float
) -> None:
    """Publish 40 events through `channel` (retrying), noting each acked one in `acked`, then
    wait until every event in `acked` is among `delivered`."""
    publish = RetryingPublisher(RouterPublisher(channel, deadline_s=3.0), max_backoff_s=0.5)
    for n in range(40):
        payload = download_pb2.DownloadProgress(download_id=f"{tag}-{n}", percent=1.0)
        acked.append((await publish.publish(payload)).event_id)
    async with asyncio.timeout(deadline_s):
        while not delivered >= set(acked):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _floor_at_stream_end(js: JetStreamContext, floors: list[int]) -> int:
    """Wait until the recorded position reaches the stream's last event (the stream holds
    only this test's events: every one of them acked); that event's sequence."""
    last = (await js.stream_info(STREAM)).state.last_seq
    async with asyncio.timeout(10):
        while not floors or floors[-1] < last:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return last


async def _lease_owner(kv: KeyValue) -> str:
    entry = await kv.get(consumer_token(CONSUMER))
    return str(json.loads(entry.value or b"{}").get("owner", ""))


async def test_a_nats_stalled_longer_than_a_lease_moves_the_consumer_to_the_other_router(
    two_routers: list[Process], nats_node: NatsServerProcess
) -> None:
    a, b = two_routers
    handlers, delivered = recorded_progress()
    acked: list[str] = []
    floors: list[int] = []
    watcher_client = await nats.connect(nats_node.url)
    js = watcher_client.jetstream()
    leases = await js.key_value(f"{STREAM}_CONSUMER_LEASES")
    recording: asyncio.Task[None] | None = None
    try:
        # Phase 1: router A serves the consumer (its subscriber knows only A).
        async with open_channel(a.address, transport=a.client) as to_a:
            first = Subscriber(to_a, consumer=CONSUMER, handlers=handlers, max_backoff_s=0.5)
            await first.start()
            await first.wait_connected(20)
            await _publish_until_all_delivered(to_a, "before", acked, delivered, 20)
            recording = asyncio.create_task(_record_floors(js, floors))
            await _floor_at_stream_end(js, floors)
            owner_before = await _lease_owner(leases)
            assert f"-{a.popen.pid}-" in owner_before

            # Phase 2: NATS stalls for longer than a lease; A must let the consumer go.
            os.kill(nats_node.popen.pid, signal.SIGSTOP)
            stalled_at = time.monotonic()
            try:
                async with asyncio.timeout(LEASE_S * 6):
                    while first.connected.is_set():  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                cut_after = time.monotonic() - stalled_at
                await first.stop()
                # The stall lasts at least three leases in all.
                await asyncio.sleep(max(0.0, LEASE_S * 3 - (time.monotonic() - stalled_at)))
            finally:
                os.kill(nats_node.popen.pid, signal.SIGCONT)

        # Phase 3: a subscriber that knows only B; B takes the consumer over once the lease
        # has stood still for a whole lease, and gets every event acked before and after.
        async with open_channel(b.address, transport=b.client) as to_b:
            second = Subscriber(to_b, consumer=CONSUMER, handlers=handlers, max_backoff_s=0.5)
            await second.start()
            try:
                await second.wait_connected(LEASE_S * 10)
                await _publish_until_all_delivered(to_b, "after", acked, delivered, 30)
                last = await _floor_at_stream_end(js, floors)
                owner_after = await _lease_owner(leases)
            finally:
                await second.stop()
    finally:
        if recording is not None:
            recording.cancel()
        await watcher_client.close()

    assert f"-{b.popen.pid}-" in owner_after
    assert not set(acked) - delivered
    # Nothing of A's landed after B took over: the position only ever moved forward.
    assert floors == sorted(floors), floors
    assert floors[-1] >= last
    assert cut_after < LEASE_S * 6
    assert any("lost the lease of consumer" in line for line in a.log_lines())
    print(f"A ended the consumer's stream {cut_after:.1f}s into the stall; floors {floors}")
