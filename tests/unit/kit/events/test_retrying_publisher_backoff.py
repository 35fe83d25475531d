"""RetryingPublisher holds an event through the kit's backoff: its waits grow while the
router is away, and close() ends the wait."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from services.kit.events.client import build_envelope
from services.kit.events.retrying_publisher import RetryingPublisher
from services.kit.rpc.errors import Unavailable
from services.kit.support.backoff import BackoffPolicy
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import track_pb2
from tests.helpers.recorded_waits import RecordedWaits, assert_follows

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from soulspot.events.v1 import envelope_pb2


class DownRouter:
    """A publisher whose router answers UNAVAILABLE `failures` times, then stores."""

    source_module = "demo"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0

    async def publish(self, payload: Message, **kwargs: Any) -> envelope_pb2.EventEnvelope:
        return await self.publish_envelope(build_envelope(payload, source_module="demo"))

    async def publish_envelope(
        self, envelope: envelope_pb2.EventEnvelope
    ) -> envelope_pb2.EventEnvelope:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise Unavailable("router down")
        return envelope


def _event() -> track_pb2.TrackImported:
    return track_pb2.TrackImported(track=references_pb2.TrackReference(title="T", artist="A"))


async def test_publish_waits_grow_while_the_router_is_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = RecordedWaits.install(monkeypatch, wanted=100)
    router = DownRouter(failures=6)
    await RetryingPublisher(router, max_backoff_s=2.0).publish(_event())
    assert router.attempts == 7
    # 0.1, 0.2, 0.4, 0.8, 1.6, then the 2 s cap, each drawn from its upper half.
    assert_follows(recorded.waits, BackoffPolicy(initial_s=0.1, cap_s=2.0, jitter="equal"))
    assert len(recorded.waits) == 6


async def test_close_ends_a_wait_at_once() -> None:
    publisher = RetryingPublisher(DownRouter(failures=10_000), max_backoff_s=30.0)
    pending = asyncio.create_task(publisher.publish(_event()))
    await asyncio.sleep(0.5)  # into the 0.4 s step's wait, real sleep
    publisher.close()
    with pytest.raises(Unavailable):
        async with asyncio.timeout(2):
            await pending
