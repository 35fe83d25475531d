"""The bus and the kit's event handlers count into the Prometheus registry they are given."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.kit.events.client import EventHandlers, RouterPublisher, Subscriber
from services.kit.observability.metrics import MeshMetrics
from services.kit.rpc import context as ctx
from soulspot.router.v1 import router_pb2
from tests.helpers.bus import (
    BusHarness,
    RawSubscriber,
    completed,
    envelope,
    wait_for,
)

if TYPE_CHECKING:
    from pathlib import Path

COMPLETED = "download.completed"


def _value(metrics: MeshMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_publish_delivery_redelivery_dead_letter_and_lag_are_counted(
    tmp_path: Path,
) -> None:
    metrics = MeshMetrics()
    async with BusHarness(tmp_path, metrics=metrics) as h:
        async with RawSubscriber(h.stub, "m1", [COMPLETED], max_attempts=2, auto_ack=False) as sub:
            await h.publish(envelope(completed("d1")))
            first = await sub.next()
            sub.nack(first.delivery_id, "broken")
            second = await sub.next()
            assert second.attempt == 2
            sub.nack(second.delivery_id, "still broken")
            await wait_for(lambda: h.bus.consumers["m1"].stats.dead_lettered == 1)
        # A causation chain that repeats a hop is parked at publish, for no consumer.
        looped = envelope(completed("d2"), source="soulseek", chain=[(COMPLETED, "soulseek")])
        assert (await h.publish(looped)).sequence == 2
        h.bus.consumers_info()

    assert _value(metrics, "soulspot_events_published_total", event_type=COMPLETED) == 2
    assert (
        _value(metrics, "soulspot_event_publish_duration_seconds_count", event_type=COMPLETED) == 2
    )
    labels = {"event_type": COMPLETED, "consumer": "m1"}
    assert _value(metrics, "soulspot_events_delivered_total", **labels) == 1
    assert _value(metrics, "soulspot_events_redelivered_total", **labels) == 1
    dead = "soulspot_events_dead_lettered_total"
    assert _value(metrics, dead, **labels, reason="max_attempts") == 1
    assert _value(metrics, dead, event_type=COMPLETED, consumer="", reason="cycle") == 1
    # Event 1 is done for m1 (dead-lettered); event 2 is stored above its floor.
    assert metrics.registry.get_sample_value("soulspot_consumer_lag", {"consumer": "m1"}) == 1


async def test_handler_runs_are_counted_and_see_the_events_trace(tmp_path: Path) -> None:
    metrics = MeshMetrics()
    async with BusHarness(tmp_path, metrics=metrics) as h:
        assert h.channel is not None
        handlers = EventHandlers(metrics=metrics)
        seen: list[tuple[str | None, str | None]] = []

        @handlers.on(COMPLETED)
        async def on_completed(_payload: Any, _envelope: Any) -> None:
            seen.append((ctx.current_correlation_id(), ctx.current_trace_id()))
            if len(seen) == 1:
                raise RuntimeError("first try fails")

        sub = Subscriber(
            h.channel,
            consumer="handlers",
            handlers=handlers,
            start=router_pb2.START_POSITION_EARLIEST,
            nack_delay_s=0.01,
        )
        await sub.start()
        try:
            await sub.wait_connected()
            with ctx.bind("corr-m"):
                stored = await RouterPublisher(h.channel, source_module="soulseek").publish(
                    completed("d1")
                )
            await wait_for(lambda: sub.handled == 1, within_s=10)
        finally:
            await sub.stop()

    trace_id = stored.traceparent.split("-")[1]
    assert seen == [("corr-m", trace_id), ("corr-m", trace_id)]
    handled = "soulspot_events_handled_total"
    assert _value(metrics, handled, event_type=COMPLETED, outcome="error") == 1
    assert _value(metrics, handled, event_type=COMPLETED, outcome="ok") == 1
    assert (
        _value(metrics, "soulspot_event_handling_duration_seconds_count", event_type=COMPLETED) == 2
    )
