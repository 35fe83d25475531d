"""Routers' buses on one shared nats-server for the JetStream consumer tests: a `Node` serves
one bus on 127.0.0.1:0, and `subscribed_once_free` subscribes at a node once it takes the
consumer."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from router.bus import create_bus
from router.bus.event_bus import SERVICE_NAME
from services.kit.rpc.channel import open_channel
from services.kit.rpc.server import KitServer
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2
from tests.helpers.bus import RawSubscriber, bus_settings

if TYPE_CHECKING:
    import grpc

    from router.bus import EventBus
    from soulspot.events.v1 import envelope_pb2


class Node:
    """One bus (a router's) on the shared nats-server, served on 127.0.0.1:0.

    `overrides` are further bus settings; with `name_as_served` the bus names itself by the
    address it is served on, as the router does once bound (status's answered_by)."""

    def __init__(
        self,
        nats_url: str,
        *,
        stream: str,
        lease_s: float,
        name_as_served: bool = False,
        **overrides: Any,
    ) -> None:
        settings = bus_settings(
            backend="jetstream",
            nats_servers=[nats_url],
            nats_stream=stream,
            consumer_lease_s=lease_s,
            **overrides,
        )
        self.bus: EventBus = create_bus(settings)
        self.server = KitServer("router", "127.0.0.1:0", grace_s=0.5)
        self.server.add_service(
            lambda s: event_bus_pb2_grpc.add_EventBusServiceServicer_to_server(self.bus, s),
            SERVICE_NAME,
        )
        self.name_as_served = name_as_served
        self.channel: grpc.aio.Channel | None = None
        self.killed = False

    async def start(self) -> None:
        await self.bus.start()
        await self.server.start()
        if self.name_as_served:
            self.bus.store.served_as = self.server.address  # type: ignore[attr-defined]
        self.channel = open_channel(self.server.address)

    async def kill(self) -> None:
        """Cut the router off from NATS at once, as a kill -9 would: nothing more of it
        (acks, naks, lease renewals, records) reaches JetStream."""
        self.killed = True
        nc = self.bus.store._nc  # type: ignore[attr-defined]
        await nc.close()

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        await self.server.stop(0.2)
        # A killed node's bus has no NATS connection left to stop cleanly.
        with contextlib.suppress(Exception) if self.killed else contextlib.nullcontext():
            await self.bus.stop()

    @property
    def stub(self) -> event_bus_pb2_grpc.EventBusServiceAsyncStub:
        assert self.channel is not None
        return event_bus_pb2_grpc.EventBusServiceStub(self.channel)

    async def publish(self, env: envelope_pb2.EventEnvelope) -> router_pb2.PublishResponse:
        return await self.stub.Publish(router_pb2.PublishRequest(event=env), timeout=10)


async def subscribed_once_free(
    node: Node,
    consumer: str,
    *,
    max_attempts: int = 0,
    auto_ack: bool = True,
    within_s: float = 10.0,
    pause_s: float = 0.05,
) -> RawSubscriber:
    """A subscriber of `consumer` (on download.*) at `node`, asked again every `pause_s` until
    the router takes it (the consumer is let go, or its lease is free or stale); the caller
    closes it."""
    async with asyncio.timeout(within_s):
        while True:
            sub = RawSubscriber(
                node.stub, consumer, ["download.*"], max_attempts=max_attempts, auto_ack=auto_ack
            )
            task = sub._task = asyncio.create_task(sub._run())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await sub.subscribed.wait()
            if sub.subscribed.is_set():
                return sub
            await sub.close()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.sleep(pause_s)
