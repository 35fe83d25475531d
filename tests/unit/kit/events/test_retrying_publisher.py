"""services.kit.events.retrying_publisher: an event held through a router outage keeps its
id, a refused event is raised at once, and a closed publisher stops retrying."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

from services.kit.events.client import build_envelope
from services.kit.events.retrying_publisher import RetryingPublisher
from services.kit.rpc.errors import InvalidArgument, Unavailable
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import track_pb2

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from soulspot.events.v1 import envelope_pb2


class FlakyRouter:
    """A publish_envelope that fails `failures` times with `error`, then stores."""

    source_module = "demo"

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.attempts: list[str] = []

    async def publish(self, payload: Message, **kwargs: Any) -> envelope_pb2.EventEnvelope:
        return await self.publish_envelope(build_envelope(payload, source_module="demo"))

    async def publish_envelope(
        self, envelope: envelope_pb2.EventEnvelope
    ) -> envelope_pb2.EventEnvelope:
        self.attempts.append(envelope.event_id)
        if len(self.attempts) <= self.failures:
            raise self.error
        return envelope


def imported() -> track_pb2.TrackImported:
    return track_pb2.TrackImported(
        track=references_pb2.TrackReference(title="T", artist="A"),
        file=references_pb2.FileReference(path="/x.flac"),
    )


async def test_retrying_publisher_holds_an_event_until_the_router_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = FlakyRouter(3, Unavailable("router down"))
    publisher = RetryingPublisher(router, max_backoff_s=0.01)
    with caplog.at_level(logging.INFO, logger="soulspot.module"):
        stored = await publisher.publish(imported())
    # One event id for every attempt: the router stores a retried event once.
    assert len(router.attempts) == 4
    assert set(router.attempts) == {stored.event_id}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "router unreachable" in warnings[0].getMessage()
    assert any("reachable again" in r.getMessage() for r in caplog.records)


async def test_retrying_publisher_raises_a_refused_event_at_once() -> None:
    router = FlakyRouter(1, InvalidArgument("bad event"))
    with pytest.raises(InvalidArgument):
        await RetryingPublisher(router, max_backoff_s=0.01).publish(imported())
    assert len(router.attempts) == 1


async def test_retrying_publisher_gives_up_when_closed() -> None:
    router = FlakyRouter(10_000, Unavailable("router down"))
    publisher = RetryingPublisher(router, max_backoff_s=0.01)
    publisher.close()
    with pytest.raises(Unavailable):
        await publisher.publish(imported())
