"""Helpers for the event bus tests: payloads, envelopes, an in-process bus server, and a
raw Subscribe client that acks, nacks or holds deliveries as a test wants."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING, Any

import grpc

from router.api import router_service
from router.api.router_service import RouterServiceDelegate
from router.bus import BusSettings, EventBus, create_bus
from router.bus.event_bus import SERVICE_NAME
from services.kit.events.client import build_envelope
from services.kit.rpc.channel import open_channel
from services.kit.rpc.server import KitServer
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2, envelope_pb2
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2, router_pb2_grpc
from tests.helpers.nats_server import start_nats_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
    from pathlib import Path

    from google.protobuf.message import Message

    from services.kit.observability.metrics import MeshMetrics
    from tests.helpers.nats_server import NatsServerProcess


def track(title: str = "Song", artist: str = "Artist") -> references_pb2.TrackReference:
    return references_pb2.TrackReference(track_id="t1", title=title, artist=artist)


def completed(download_id: str = "d1", **track_fields: str) -> download_pb2.DownloadCompleted:
    return download_pb2.DownloadCompleted(
        download_id=download_id,
        track=track(**track_fields),
        file=references_pb2.FileReference(path="/music/song.flac"),
    )


def started(download_id: str = "d1") -> download_pb2.DownloadStarted:
    return download_pb2.DownloadStarted(download_id=download_id, track=track())


def envelope(
    payload: Message,
    *,
    source: str = "soulseek",
    event_id: str | None = None,
    chain: Iterable[tuple[str, str]] = (),
) -> envelope_pb2.EventEnvelope:
    env = build_envelope(payload, source_module=source, cause=None)
    if event_id is not None:
        env.event_id = event_id
    for event_type, module in chain:
        env.causation_chain.add(
            event_id=str(uuid.uuid4()), event_type=event_type, source_module=module
        )
    return env


def bus_settings(**overrides: Any) -> BusSettings:
    values: dict[str, Any] = {"default_ack_timeout_s": 5.0, "retention_interval_s": 3600.0}
    values.update(overrides)
    return BusSettings(**values)


class BusHarness:
    """An EventBus served by a real gRPC server on 127.0.0.1:0 (EventBusService, and the
    deprecated RouterService's bus RPCs, as `python -m router.bus` serves them), and a client
    channel."""

    def __init__(
        self,
        state_dir: Path,
        settings: BusSettings | None = None,
        *,
        metrics: MeshMetrics | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.settings = settings or bus_settings()
        # SOULSPOT_BUS__BACKEND=jetstream runs the same tests on a nats-server of their own,
        # its files under state_dir (a harness restarted on the folder finds the log again).
        self.nats: NatsServerProcess | None = None
        if self.settings.backend == "jetstream":
            self.nats = start_nats_server(state_dir / "nats")
            self.settings = self.settings.model_copy(update={"nats_servers": [self.nats.url]})
        self.bus: EventBus = create_bus(self.settings, state_dir=state_dir, metrics=metrics)
        self.server = KitServer("router", "127.0.0.1:0", grace_s=0.5)
        self.server.add_service(
            lambda s: event_bus_pb2_grpc.add_EventBusServiceServicer_to_server(self.bus, s),
            SERVICE_NAME,
        )
        delegate = RouterServiceDelegate(bus=self.bus)
        self.server.add_service(
            lambda s: router_pb2_grpc.add_RouterServiceServicer_to_server(delegate, s),
            router_service.SERVICE_NAME,
        )
        self.channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> BusHarness:
        await self.bus.start()
        await self.server.start()
        self.channel = open_channel(self.server.address)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.channel is not None:
            await self.channel.close()
        await self.server.stop(0.2)
        await self.bus.stop()
        if self.nats is not None:
            self.nats.stop()

    @property
    def stub(self) -> event_bus_pb2_grpc.EventBusServiceAsyncStub:
        assert self.channel is not None
        return event_bus_pb2_grpc.EventBusServiceStub(self.channel)

    @property
    def router_stub(self) -> router_pb2_grpc.RouterServiceAsyncStub:
        """The deprecated RouterService, still served for existing callers."""
        assert self.channel is not None
        return router_pb2_grpc.RouterServiceStub(self.channel)

    async def publish(self, env: envelope_pb2.EventEnvelope) -> router_pb2.PublishResponse:
        return await self.stub.Publish(router_pb2.PublishRequest(event=env), timeout=10)


class RawSubscriber:
    """A Subscribe stream the test drives by hand."""

    def __init__(
        self,
        stub: event_bus_pb2_grpc.EventBusServiceAsyncStub | router_pb2_grpc.RouterServiceAsyncStub,
        consumer: str,
        event_types: list[str],
        *,
        start: int = router_pb2.START_POSITION_EARLIEST,
        max_in_flight: int = 16,
        ack_timeout_s: float | None = None,
        max_attempts: int = 0,
        auto_ack: bool = True,
        inactive_threshold_s: float | None = None,
    ) -> None:
        self.stub = stub
        self.auto_ack = auto_ack
        self.deliveries: asyncio.Queue[router_pb2.Delivery] = asyncio.Queue()
        self.received: list[router_pb2.Delivery] = []
        self.subscribed = asyncio.Event()
        self.acked_sequence = 0
        self._outbox: asyncio.Queue[router_pb2.SubscribeRequest] = asyncio.Queue()
        start_msg = router_pb2.SubscribeStart(
            consumer=consumer,
            event_types=event_types,
            start=start,  # type: ignore[arg-type]
            max_in_flight=max_in_flight,
            max_attempts=max_attempts,
        )
        if ack_timeout_s is not None:
            start_msg.ack_timeout.FromMilliseconds(int(ack_timeout_s * 1000))
        if inactive_threshold_s is not None:
            start_msg.inactive_threshold.FromMilliseconds(int(inactive_threshold_s * 1000))
        self._outbox.put_nowait(router_pb2.SubscribeRequest(start=start_msg))
        self._call: Any = None
        self._task: asyncio.Task[None] | None = None
        self.error: grpc.aio.AioRpcError | None = None

    async def _requests(self) -> AsyncIterator[router_pb2.SubscribeRequest]:
        while True:
            yield await self._outbox.get()

    async def _run(self) -> None:
        self._call = self.stub.Subscribe(self._requests())
        try:
            async for response in self._call:
                if response.WhichOneof("kind") == "subscribed":
                    self.acked_sequence = response.subscribed.acked_sequence
                    self.subscribed.set()
                    continue
                delivery = response.delivery
                self.received.append(delivery)
                if self.auto_ack:
                    self.ack(delivery.delivery_id)
                await self.deliveries.put(delivery)
        except grpc.aio.AioRpcError as err:
            self.error = err

    async def __aenter__(self) -> RawSubscriber:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self.subscribed.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def ack(self, delivery_id: int) -> None:
        self._outbox.put_nowait(
            router_pb2.SubscribeRequest(ack=router_pb2.Ack(delivery_id=delivery_id))
        )

    def ack_batch(self, delivery_ids: list[int]) -> None:
        self._outbox.put_nowait(
            router_pb2.SubscribeRequest(ack_batch=router_pb2.AckBatch(delivery_ids=delivery_ids))
        )

    def nack(self, delivery_id: int, reason: str = "failed", delay_s: float = 0.0) -> None:
        nack = router_pb2.Nack(delivery_id=delivery_id, reason=reason)
        if delay_s:
            nack.delay.FromMilliseconds(int(delay_s * 1000))
        self._outbox.put_nowait(router_pb2.SubscribeRequest(nack=nack))

    def in_progress(self, delivery_id: int) -> None:
        self._outbox.put_nowait(
            router_pb2.SubscribeRequest(in_progress=router_pb2.InProgress(delivery_id=delivery_id))
        )

    async def next(self, within_s: float = 5.0) -> router_pb2.Delivery:
        async with asyncio.timeout(within_s):
            return await self.deliveries.get()

    async def take(self, count: int, within_s: float = 10.0) -> list[router_pb2.Delivery]:
        out: list[router_pb2.Delivery] = []
        async with asyncio.timeout(within_s):
            while len(out) < count:
                out.append(await self.deliveries.get())
        return out

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await self.next(seconds)
        except TimeoutError:
            return True
        return False


async def wait_for(predicate: Any, within_s: float = 5.0, step_s: float = 0.02) -> None:
    """Poll an (async or plain) predicate until it is true."""
    async with asyncio.timeout(within_s):
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            await asyncio.sleep(step_s)
