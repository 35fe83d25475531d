"""router.metrics: the router's series sit on the process's registry under their names, once
per registry, and `router_metrics()` follows the current process default."""

from __future__ import annotations

from router.metrics import router_metrics
from services.kit.observability import metrics as m


def _value(metrics: m.MeshMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_router_recorders() -> None:
    metrics = m.MeshMetrics()
    router = router_metrics(metrics)
    router.record_call("download.track", "soulseek", "UNAVAILABLE", 0.02)
    router.record_call("download.track", "folder", "OK", 0.01)
    router.record_fallback("download.track", "soulseek", "folder")
    router.set_breaker("soulseek", "open")
    router.event_published("download.completed", 0.003)
    router.event_delivered("download.completed", "pipeline", attempt=1)
    router.event_delivered("download.completed", "pipeline", attempt=2)
    router.event_dead_lettered("download.completed", "pipeline", "max_attempts")
    router.set_consumer_lag("pipeline", 7)
    router.pipeline_step("enrich.metadata", "deferred")

    assert (
        _value(
            metrics,
            "soulspot_capability_calls_total",
            capability="download.track",
            module="folder",
            code="OK",
        )
        == 1
    )
    fallback = {"capability": "download.track", "from_module": "soulseek", "to_module": "folder"}
    assert _value(metrics, "soulspot_capability_fallbacks_total", **fallback) == 1
    assert _value(metrics, "soulspot_breaker_state", module="soulseek") == 2
    router.set_breaker("soulseek", "closed")
    assert _value(metrics, "soulspot_breaker_state", module="soulseek") == 0
    delivered = {"event_type": "download.completed", "consumer": "pipeline"}
    assert _value(metrics, "soulspot_events_delivered_total", **delivered) == 1
    assert _value(metrics, "soulspot_events_redelivered_total", **delivered) == 1
    dead = {**delivered, "reason": "max_attempts"}
    assert _value(metrics, "soulspot_events_dead_lettered_total", **dead) == 1
    assert _value(metrics, "soulspot_consumer_lag", consumer="pipeline") == 7
    assert (
        _value(
            metrics,
            "soulspot_pipeline_steps_total",
            capability="enrich.metadata",
            outcome="deferred",
        )
        == 1
    )


def test_one_router_metrics_per_registry_beside_the_kit_series() -> None:
    metrics = m.MeshMetrics()
    first = router_metrics(metrics)
    # Asked for again (the proxy, each breaker, the bus): the same series, not a second
    # registration, which prometheus_client would refuse as duplicated.
    assert router_metrics(metrics) is first
    assert router_metrics(m.MeshMetrics()) is not first
    first.event_published("track.ready")
    metrics.event_handled("track.ready", "ok")
    body = metrics.exposition().decode()
    assert 'soulspot_events_published_total{event_type="track.ready"} 1.0' in body
    assert 'soulspot_events_handled_total{event_type="track.ready",outcome="ok"} 1.0' in body


def test_without_an_instance_the_current_default_counts() -> None:
    original = m.default_metrics()
    earlier = m.use_metrics(m.MeshMetrics())
    current = m.use_metrics(m.MeshMetrics())
    try:
        router_metrics().event_published("track.ready")
        router_metrics().set_breaker("library", "half_open")
    finally:
        m.use_metrics(original)
    assert _value(current, "soulspot_events_published_total", event_type="track.ready") == 1
    assert _value(current, "soulspot_breaker_state", module="library") == 1
    assert _value(earlier, "soulspot_events_published_total", event_type="track.ready") == 0
