"""A router whose NATS is not there yet: it serves NOT_SERVING, its bus calls answer UNAVAILABLE
saying what it waits for, and it serves the bus once a real nats-server comes up; or it gives up
after its start-up wait. A router whose NATS stalls after start serves its bus NOT_SERVING
(saying since when it is unreachable, "" left SERVING) until NATS answers again. And a NATS
that stalls for longer than a pipeline lease moves no run of a router that is alive, while a
router gone for good has its run taken over once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING

import grpc
import pytest

from router.app import RouterApp
from router.bus import BusSettings, create_bus, event_bus
from router.bus.jetstream.connection import MAX_OUTSTANDING_PINGS, PING_INTERVAL_S, nats_links
from router.bus.jetstream.startup import START_BACKOFF, JetStreamUnreachable, waiting_for
from router.pipeline import store as st
from router.pipeline.kv_store import KvRunStore
from router.settings import RouterSection, RouterSettings
from services.kit.events.client import RouterPublisher, Subscriber
from services.kit.rpc.channel import check_health, open_channel
from soulspot.events.v1 import download_pb2
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2, router_pb2_grpc, status_pb2_grpc
from tests.helpers.bus import envelope
from tests.helpers.nats_server import node_config, start_nats_server, start_node
from tests.helpers.router_cluster import publish_until_delivered, recorded_progress

if TYPE_CHECKING:
    from pathlib import Path

    from router.bus.event_bus import EventBus
    from tests.helpers.nats_server import NatsServerProcess

pytestmark = pytest.mark.timeout(60)

# Connecting, creating the streams and buckets: on a loaded machine.
READY_MARGIN_S = 15.0
WATCHER_LEASE_S = 3.0


def _router(tmp_path: Path, nats_url: str) -> tuple[RouterApp, EventBus]:
    settings = RouterSettings(
        router=RouterSection(address="127.0.0.1:0"),
        bus=BusSettings(backend="jetstream", nats_servers=[nats_url]),
        state_dir=tmp_path / "state",
    )
    bus = create_bus(settings.bus, state_dir=settings.state_dir)
    app = RouterApp(settings, bus=bus)
    # As the router's main does on JetStream: up before JetStream answers, NOT_SERVING.
    app.bus_gate.close(waiting_for(settings.bus.nats_servers))
    return app, bus


async def test_a_router_serves_its_bus_once_nats_comes_up(tmp_path: Path) -> None:
    node = node_config(tmp_path / "nats")
    app, bus = _router(tmp_path, node.url)
    await app.start()
    starting = asyncio.create_task(
        app.start_bus(bus.start, bus.store.close, servers=[node.url], give_up_after_s=60)
    )
    server: NatsServerProcess | None = None
    try:
        async with open_channel(app.address) as channel:
            assert not await check_health(channel, "")
            assert not await check_health(channel, event_bus.SERVICE_NAME)
            assert app.server.health.status("") == (False, f"waiting for JetStream at {node.url}")

            # Status answers meanwhile, with what the router waits for.
            status = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                router_pb2.GetStatusRequest(), timeout=5
            )
            (warning,) = [w for w in status.warnings if w.operation == "event bus"]
            assert warning.status.startswith(
                "the event log (JetStream) is not reachable from this router since "
            )
            assert node.url not in warning.status  # the servers are in the logs only

            # The deprecated RouterService's bus RPCs are refused the same way.
            payload = download_pb2.DownloadProgress(download_id="d1", percent=1.0)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await router_pb2_grpc.RouterServiceStub(channel).Publish(
                    router_pb2.PublishRequest(event=envelope(payload)), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert (refused.value.details() or "").startswith(
                "the event log (JetStream) is not reachable from this router since "
            )
            assert node.url not in (refused.value.details() or "")

            # A subscriber started meanwhile is served once NATS is up.
            handlers, delivered = recorded_progress()
            subscriber = Subscriber(channel, consumer="patient", handlers=handlers)
            await subscriber.start()
            try:
                server = start_node(node)
                began = time.monotonic()
                async with asyncio.timeout(START_BACKOFF.cap_s + READY_MARGIN_S):
                    await starting
                print(f"bus served {time.monotonic() - began:.1f}s after nats-server started")
                assert await check_health(channel, "")
                assert await check_health(channel, event_bus.SERVICE_NAME)
                status = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                    router_pb2.GetStatusRequest(), timeout=5
                )
                assert not [w for w in status.warnings if w.operation == "event bus"]

                await publish_until_delivered(channel, subscriber, delivered, payload)
            finally:
                await subscriber.stop()
    finally:
        if not starting.done():
            starting.cancel()
        await app.stop(0.2)
        await bus.stop()
        if server is not None:
            server.stop()


async def test_a_router_gives_up_after_its_start_wait(tmp_path: Path) -> None:
    node = node_config(tmp_path / "nats")  # never started
    app, bus = _router(tmp_path, node.url)
    await app.start()
    try:
        began = time.monotonic()
        with pytest.raises(JetStreamUnreachable) as gave_up:
            await app.start_bus(bus.start, bus.store.close, servers=[node.url], give_up_after_s=1)
        assert time.monotonic() - began < 1 + START_BACKOFF.cap_s
        assert "SOULSPOT_BUS__NATS_START_WAIT_S=1" in str(gave_up.value)
        assert f"no JetStream at {node.url}" in str(gave_up.value)
        assert app.server.health.status("") == (False, f"waiting for JetStream at {node.url}")
    finally:
        await app.stop(0.2)
        await bus.stop()


async def test_a_router_whose_nats_stalls_serves_its_bus_not_serving_until_it_answers(
    tmp_path: Path,
) -> None:
    server = start_nats_server(tmp_path / "nats")
    app, bus = _router(tmp_path, server.url)
    await app.start()
    try:
        await app.start_bus(bus.start, bus.store.close, servers=[server.url], give_up_after_s=60)
        async with open_channel(app.address) as channel:
            assert await check_health(channel, event_bus.SERVICE_NAME)
            status_stub = status_pb2_grpc.StatusServiceStub(channel)

            # Stalled, not gone: only the missed pings tell the router.
            os.kill(server.popen.pid, signal.SIGSTOP)
            try:
                began = time.monotonic()
                ping_window_s = (MAX_OUTSTANDING_PINGS + 1) * PING_INTERVAL_S
                async with asyncio.timeout(ping_window_s + READY_MARGIN_S / 3):
                    while await check_health(channel, event_bus.SERVICE_NAME):  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                print(f"bus NOT_SERVING {time.monotonic() - began:.1f}s after NATS stalled")
                serving, reason = app.server.health.status(event_bus.SERVICE_NAME) or (True, "")
                assert not serving
                assert (reason or "").startswith(f"JetStream at {server.url} unreachable since ")
                # The router itself still serves: clients read NOT_SERVING there as shutdown.
                assert await check_health(channel, "")
                status = await status_stub.GetStatus(router_pb2.GetStatusRequest(), timeout=5)
                (warning,) = [w for w in status.warnings if w.operation == "event bus"]
                # The same since-time, without the servers (anyone may ask for status).
                assert warning.status.endswith(f"since {(reason or '').rsplit(' ', 1)[-1]}; retry")
                assert server.url not in warning.status
                payload = download_pb2.DownloadProgress(download_id="d1", percent=1.0)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await event_bus_pb2_grpc.EventBusServiceStub(channel).Publish(
                        router_pb2.PublishRequest(event=envelope(payload)), timeout=5
                    )
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert (refused.value.details() or "") == warning.status
            finally:
                os.kill(server.popen.pid, signal.SIGCONT)

            began = time.monotonic()
            # A reconnection try that dialled the stalled server ends with its connect timeout.
            async with asyncio.timeout(READY_MARGIN_S + BusSettings().nats_request_timeout_s):
                while not await check_health(channel, event_bus.SERVICE_NAME):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            print(f"bus SERVING {time.monotonic() - began:.1f}s after NATS went on")
            status = await status_stub.GetStatus(router_pb2.GetStatusRequest(), timeout=5)
            assert not [w for w in status.warnings if w.operation == "event bus"]
            published = await RouterPublisher(channel, deadline_s=10.0).publish(payload)
            assert published.event_id
    finally:
        await app.stop(0.2)
        await bus.stop()
        if server.popen.poll() is None:
            os.kill(server.popen.pid, signal.SIGCONT)
        server.stop()
    # Connections closed on purpose (the router stopped) are not counted as down.
    assert nats_links.down_since([server.url]) is None


async def test_a_nats_stall_longer_than_a_lease_moves_no_run_of_a_live_router(
    tmp_path: Path,
) -> None:
    server = start_nats_server(tmp_path / "nats")
    # The holder renews its lease every 40 s: not once during the test, as a router whose
    # renewals the stall held up. The watcher calls a lease stale after WATCHER_LEASE_S
    # standing still (and a renewal of its own slower than a third of that a stall).
    holder = KvRunStore([server.url], lease_s=120.0)
    watcher = KvRunStore([server.url], lease_s=WATCHER_LEASE_S)
    await holder.open()
    await watcher.open()
    try:
        run_id, created = await holder.create_run(
            event_id="e1",
            correlation_id="c1",
            description="Artist - Title",
            trigger=b"",
            context={},
            steps=[st.NewStep("import", "import.track", True)],
        )
        assert created
        assert await watcher.take_over() == []  # the holder's lease is fresh

        os.kill(server.popen.pid, signal.SIGSTOP)
        try:
            with contextlib.suppress(Exception):  # cannot see the leases: NATS stalled
                async with asyncio.timeout(8):
                    await watcher.take_over()
            await asyncio.sleep(WATCHER_LEASE_S)  # longer than the watcher's lease in all
        finally:
            os.kill(server.popen.pid, signal.SIGCONT)

        # The holder's lease stood still through the stall, which the watcher did not see:
        # nothing moves.
        assert await watcher.take_over() == []
        # In sight for a whole lease without a renewal, the run is taken over, and once.
        await asyncio.sleep(WATCHER_LEASE_S + 0.2)
        assert await watcher.take_over() == [run_id]
        await asyncio.sleep(WATCHER_LEASE_S + 0.2)
        assert await watcher.take_over() == []
        with pytest.raises(st.LeaseLost):
            await holder.set_state(run_id, st.RUN_COMPLETED)
    finally:
        await watcher.close()
        await holder.close()
        if server.popen.poll() is None:
            os.kill(server.popen.pid, signal.SIGCONT)
        server.stop()
