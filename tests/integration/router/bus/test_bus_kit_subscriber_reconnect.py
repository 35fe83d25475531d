"""A kit Subscriber that reconnects leaves nothing behind: no task destroyed while pending,
no request stream closed twice (asyncio reports both through the loop's exception handler,
which `-W error` does not turn into a failure, so these tests collect what it is handed)."""

from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING, Any

import pytest

from router.api import router_service
from router.api.router_service import RouterServiceDelegate
from router.bus.event_bus import SERVICE_NAME
from services.kit.events.client import EventHandlers, RouterPublisher, Subscriber
from services.kit.rpc.channel import open_channel
from services.kit.rpc.server import KitServer
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2_grpc
from tests.helpers.bus import completed, wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.helpers.bus import BusHarness


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What the running loop's exception handler is handed during the test."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    loop.set_exception_handler(previous)


def _described(errors: list[dict[str, Any]]) -> list[str]:
    return [f"{e.get('message')}: {e.get('exception')!r} {e.get('task', '')}" for e in errors]


def _leftovers(errors: list[dict[str, Any]]) -> list[str]:
    """The loop errors a stream's request side leaves when its call ends under it."""
    gc.collect()  # a task only left pending is reported when it is collected
    return [
        line
        for line in _described(errors)
        if "destroyed but it is pending" in line
        or "already running" in line
        or "asynchronous generator" in line
    ]


def _bus_server(harness: BusHarness, address: str) -> KitServer:
    """A server for the harness's bus on `address`: the router back on the port it had."""
    server = KitServer("router", address, grace_s=0.2)
    server.add_service(
        lambda s: event_bus_pb2_grpc.add_EventBusServiceServicer_to_server(harness.bus, s),
        SERVICE_NAME,
    )
    delegate = RouterServiceDelegate(bus=harness.bus)
    server.add_service(
        lambda s: router_pb2_grpc.add_RouterServiceServicer_to_server(delegate, s),
        router_service.SERVICE_NAME,
    )
    return server


class _CountingSubscriber(Subscriber):
    """Counts the Subscribe streams it opened, so a test can wait for refused ones."""

    sessions = 0

    async def _session(self) -> None:
        self.sessions += 1
        await super()._session()


def _recorder(got: list[str]) -> EventHandlers:
    handlers = EventHandlers()

    @handlers.on("download.completed")
    async def record(payload: Any, envelope: Any) -> None:
        got.append(payload.download_id)

    return handlers


async def test_reconnect_after_the_router_restarts_leaves_no_loop_errors(
    harness: BusHarness, loop_errors: list[dict[str, Any]]
) -> None:
    address = harness.server.address
    channel = open_channel(address)
    got: list[str] = []
    sub = _CountingSubscriber(
        channel, consumer="restart", handlers=_recorder(got), max_backoff_s=0.1
    )
    await sub.start()
    replacement: KitServer | None = None
    try:
        await sub.wait_connected()
        # The router goes away: the stream breaks, and each Subscribe while it is down is
        # refused with UNAVAILABLE.
        await harness.server.stop(0)
        await wait_for(lambda: not sub.connected.is_set(), within_s=10)
        refused_from = sub.sessions
        await wait_for(lambda: sub.sessions >= refused_from + 2, within_s=10)
        replacement = _bus_server(harness, address)
        await replacement.start()
        await sub.wait_connected(within_s=20)
        await RouterPublisher(channel, source_module="folder").publish(completed("after"))
        await wait_for(lambda: got == ["after"], within_s=10)
        assert _leftovers(loop_errors) == []
    finally:
        await sub.stop()
        await channel.close()
        if replacement is not None:
            await replacement.stop(0)
    assert _leftovers(loop_errors) == []


async def test_streams_the_router_ends_leave_no_loop_errors(
    harness: BusHarness, loop_errors: list[dict[str, Any]]
) -> None:
    assert harness.channel is not None
    got: list[str] = []
    sub = Subscriber(harness.channel, consumer="ends", handlers=_recorder(got), max_backoff_s=0.1)
    publisher = RouterPublisher(harness.channel, source_module="folder")
    await sub.start()
    try:
        for round_ in range(3):
            await sub.wait_connected()
            await publisher.publish(completed(f"round-{round_}"))
            await wait_for(lambda n=round_: len(got) == n + 1, within_s=10)
            for s in list(harness.bus.consumers["ends"].subscriptions):
                s.end()  # the router ends the stream; the subscriber comes back
            await wait_for(lambda: not sub.connected.is_set(), within_s=10)
        await sub.wait_connected()
        assert _leftovers(loop_errors) == []
    finally:
        await sub.stop()
    assert got == ["round-0", "round-1", "round-2"]
    assert _leftovers(loop_errors) == []
