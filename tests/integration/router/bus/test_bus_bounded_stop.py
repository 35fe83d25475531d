"""A bus on JetStream stops within a bound whatever NATS does: with the server frozen (a
connection open, nothing answered), with a background loop that lost its cancellation (as a
NATS request does on Python 3.11 when the reply and the cancellation meet), and a stop that
is itself cancelled ends instead of going on to wait for a task the cancellation ended."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import TYPE_CHECKING

from router.bus.jetstream_store import JetStreamEventStore
from tests.helpers.bus import BusHarness, RawSubscriber, bus_settings, envelope, started

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

REQUEST_TIMEOUT_S = 1.0
# Generous against the stop's own bounds (a few request timeouts), far below the per-test
# timeout: a stop that waits forever fails here, not by hanging the suite.
STOP_WITHIN_S = 20.0


@contextlib.asynccontextmanager
async def _bus_with_a_consumer(tmp_path: Path) -> AsyncIterator[BusHarness]:
    """A bus on its own nats-server, serving one durable consumer with a subscriber."""
    settings = bus_settings(
        backend="jetstream", nats_request_timeout_s=REQUEST_TIMEOUT_S, metrics_interval_s=0.05
    )
    async with (
        BusHarness(tmp_path, settings) as harness,
        RawSubscriber(harness.stub, "held", ["download.*"]) as sub,
    ):
        await harness.publish(envelope(started("d1")))
        await sub.next()
        yield harness


async def _stopped_within(harness: BusHarness) -> float:
    began = time.monotonic()
    async with asyncio.timeout(STOP_WITHIN_S):
        await harness.bus.stop()
    return time.monotonic() - began


async def test_a_bus_whose_nats_server_is_frozen_stops_within_its_bounds(tmp_path: Path) -> None:
    async with _bus_with_a_consumer(tmp_path) as harness:
        assert harness.nats is not None
        harness.nats.popen.send_signal(signal.SIGSTOP)
        try:
            took = await _stopped_within(harness)
        finally:
            harness.nats.popen.send_signal(signal.SIGCONT)
        assert took < STOP_WITHIN_S


async def test_a_background_loop_that_lost_its_cancellation_does_not_hold_the_stop(
    tmp_path: Path,
) -> None:
    async with _bus_with_a_consumer(tmp_path) as harness:
        store = harness.bus.store
        assert isinstance(store, JetStreamEventStore)
        real = store.last_sequence
        lost = asyncio.Event()

        async def losing_one_cancellation() -> int:
            # The bus's lag loop asks this; the first cancellation that reaches it is lost,
            # as Python 3.11's wait_for loses one whose reply arrived in the same turn.
            if not lost.is_set():
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    lost.set()
            return await real()

        store.last_sequence = losing_one_cancellation  # type: ignore[method-assign]
        await asyncio.sleep(0.2)  # the lag loop is in it by now (every 0.05 s)
        await _stopped_within(harness)
        assert lost.is_set()


async def test_a_cancelled_stop_ends_instead_of_waiting_on(tmp_path: Path) -> None:
    async with _bus_with_a_consumer(tmp_path) as harness:
        assert harness.nats is not None
        harness.nats.popen.send_signal(signal.SIGSTOP)
        try:
            stopping = asyncio.create_task(harness.bus.stop())
            await asyncio.sleep(0.3)  # into its steps, waiting on the frozen server
            stopping.cancel()
            # As an event loop closing cancels it: it ends cancelled, within a cancellation's
            # round, not after every step it had left.
            done, _ = await asyncio.wait([stopping], timeout=3 * REQUEST_TIMEOUT_S)
            assert stopping in done
            assert stopping.cancelled()
        finally:
            harness.nats.popen.send_signal(signal.SIGCONT)
        # What the cancelled stop left undone (its connection above all) is the test's to end.
        await harness.bus.store.close()
