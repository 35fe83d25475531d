"""A Subscribe stream whose task is cancelled while it ends (waiting for its acks reader to
unwind) ends cancelled, after its cleanup: the cancellation of whoever ends it is passed on,
not swallowed with the reader's."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from router.bus import create_bus
from soulspot.router.v1 import router_pb2
from tests.helpers.bus import bus_settings, wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator
    from pathlib import Path

CONSUMER = "held"


class _Context:
    """What Subscribe reads of a servicer context: the peer, no verified identity."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"

    def auth_context(self) -> dict[str, Any]:
        return {}


class _SlowToUnwindRequests:
    """A subscriber's request stream: the start, then nothing; cancelled, it takes until
    `release` to unwind (as a read from a slow peer does), then ends cancelled."""

    def __init__(self, first: router_pb2.SubscribeRequest) -> None:
        self._first: router_pb2.SubscribeRequest | None = first
        self.unwinding = asyncio.Event()
        self.release = asyncio.Event()

    def __aiter__(self) -> _SlowToUnwindRequests:
        return self

    async def __anext__(self) -> router_pb2.SubscribeRequest:
        first, self._first = self._first, None
        if first is not None:
            return first
        try:
            await asyncio.Event().wait()  # until cancelled
        except asyncio.CancelledError:
            self.unwinding.set()
            await self.release.wait()
            raise
        raise AssertionError("unreachable")


async def test_a_subscribe_stream_cancelled_while_it_ends_passes_the_cancellation_on(
    tmp_path: Path,
) -> None:
    bus = create_bus(bus_settings(), state_dir=tmp_path)
    await bus.start()
    try:
        start = router_pb2.SubscribeStart(consumer=CONSUMER, event_types=["download.*"])
        requests = _SlowToUnwindRequests(router_pb2.SubscribeRequest(start=start))
        # The handler is an async generator, closed as gRPC closes it when a stream ends.
        stream = cast(
            "AsyncGenerator[router_pb2.SubscribeResponse, None]",
            bus.Subscribe(requests, _Context()),  # type: ignore[arg-type]
        )
        first = await anext(stream)
        assert first.HasField("subscribed")
        assert bus.consumers[CONSUMER].attached

        # The stream is being closed and waits for its reader; whoever closes it is cancelled.
        closing = asyncio.create_task(stream.aclose())
        await asyncio.wait_for(requests.unwinding.wait(), 10.0)
        closing.cancel()
        requests.release.set()

        done, _ = await asyncio.wait([closing], timeout=10.0)
        assert closing in done
        assert closing.cancelled()
        # The cleanup ran all the same: the subscription is gone from its consumer.
        await wait_for(lambda: not bus.consumers[CONSUMER].attached)
    finally:
        await bus.stop()
