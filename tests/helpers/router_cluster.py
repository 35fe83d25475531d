"""Start several router processes sharing one NATS (their event log and pipeline runs in
JetStream) and one mesh CA, each with its own state folder, ready to serve (or one router on
JetStream, not waited for); the address that names them all, and the handlers of a durable
consumer that records what it was handed, with a publish that waits until it was."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from services.kit.events.client import EventHandlers, RouterPublisher
from services.kit.rpc.channel import wait_for_ready
from tests.helpers.processes import Process, free_port, start_router

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import grpc
    from google.protobuf.message import Message

    from services.kit.events.client import Subscriber
    from soulspot.events.v1 import download_pb2, envelope_pb2

READY_DEADLINE_S = 30.0


def start_jetstream_router(tmp: Path, nats_urls: Sequence[str], **env: str) -> Process:
    """A router process on the NATS servers `nats_urls`, dashboard off, not waited for (its
    NATS may not be up yet)."""
    return start_router(
        tmp,
        free_port(),
        SOULSPOT_ROUTER__HTTP_ADDRESS="off",
        SOULSPOT_BUS__BACKEND="jetstream",
        SOULSPOT_BUS__NATS_SERVERS=json.dumps(list(nats_urls)),
        **env,
    )


def start_routers(
    tmp: Path, nats_urls: Sequence[str], *, count: int = 2, replicas: int = 1, **env: str
) -> list[Process]:
    """`count` routers on the NATS servers `nats_urls`, dashboards off; stops the started
    ones when one fails to come up."""
    started: list[Process] = []
    try:
        for index in range(count):
            router = start_jetstream_router(
                tmp,
                nats_urls,
                SOULSPOT_STATE_DIR=str(tmp / f"state-{index}"),
                SOULSPOT_BUS__NATS_REPLICAS=str(replicas),
                **env,
            )
            started.append(router)
            asyncio.run(wait_for_ready(router.address, READY_DEADLINE_S, transport=router.client))
    except BaseException:
        for router in started:
            router.stop()
        raise
    return started


def every_router(routers: Sequence[Process]) -> str:
    """One channel target naming every router: the kit's channel round-robins over them."""
    return ",".join(r.address for r in routers)


def recorded_progress() -> tuple[EventHandlers, set[str]]:
    """Handlers of download.progress and the set of event ids they were handed."""
    delivered: set[str] = set()
    handlers = EventHandlers()

    @handlers.on("download.progress")
    async def on_progress(
        event: download_pb2.DownloadProgress, envelope: envelope_pb2.EventEnvelope
    ) -> None:
        delivered.add(envelope.event_id)

    return handlers, delivered


async def publish_until_delivered(
    channel: grpc.aio.Channel,
    subscriber: Subscriber,
    delivered: set[str],
    payload: Message,
    *,
    deadline_s: float = 20.0,
) -> None:
    """Once `subscriber` is connected, publish `payload` through `channel` and wait until its
    event is among `delivered` (the set `recorded_progress` fills)."""
    await subscriber.wait_connected(deadline_s)
    published = await RouterPublisher(channel, deadline_s=5.0).publish(payload)
    async with asyncio.timeout(deadline_s):
        while published.event_id not in delivered:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
