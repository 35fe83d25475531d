"""The router's own Prometheus series, registered on the process's metrics registry.

What every process records (RPCs served, event handlers run) lives in
services.kit.observability.metrics; what only the router does (forwarding capability calls,
breakers, the event bus, the pipeline) is counted here. `RouterMetrics` registers its series on
the registry of a `MeshMetrics`, so the router's /metrics serves both from one registry, under
the same names as ever:

    capability_calls_total{capability,module,code}        calls the router forwarded, by outcome
    capability_call_duration_seconds{capability,module}   their latency
    capability_fallbacks_total{capability,from_module,to_module}
    breaker_state{module}                                 0 closed, 1 half_open, 2 open
    events_published_total{event_type}
    event_publish_duration_seconds{event_type}
    events_delivered_total{event_type,consumer}
    events_redelivered_total{event_type,consumer}
    events_dead_lettered_total{event_type,consumer,reason}
    consumer_lag{consumer}                                stored matching events not yet acked
    pipeline_steps_total{capability,outcome}

`router_metrics(metrics)` gives the one `RouterMetrics` of a registry: the proxy, the breakers
and the bus each ask for it, and a second registration of the same names would fail with
"duplicated timeseries".
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from services.kit.observability.metrics import LATENCY_BUCKETS, default_metrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from services.kit.observability.metrics import MeshMetrics

__all__ = ["BREAKER_STATES", "RouterMetrics", "router_metrics"]

BREAKER_STATES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}


class RouterMetrics:
    """The router's series on one registry (use `router_metrics()` rather than building one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = r = registry
        self.calls = Counter(
            "soulspot_capability_calls",
            "Capability calls forwarded by the router, by answering module and status code.",
            ("capability", "module", "code"),
            registry=r,
        )
        self.call_seconds = Histogram(
            "soulspot_capability_call_duration_seconds",
            "Latency of one forwarded capability call attempt.",
            ("capability", "module"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "soulspot_capability_fallbacks",
            "Calls retried on the next provider after a transient failure.",
            ("capability", "from_module", "to_module"),
            registry=r,
        )
        self.breaker = Gauge(
            "soulspot_breaker_state",
            "Circuit breaker per module: 0 closed, 1 half_open, 2 open.",
            ("module",),
            registry=r,
        )
        self.published = Counter(
            "soulspot_events_published",
            "Events accepted into the log.",
            ("event_type",),
            registry=r,
        )
        self.publish_seconds = Histogram(
            "soulspot_event_publish_duration_seconds",
            "Time from publish request to durable acknowledgement.",
            ("event_type",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.delivered = Counter(
            "soulspot_events_delivered",
            "Deliveries sent to subscribers (first attempts).",
            ("event_type", "consumer"),
            registry=r,
        )
        self.redelivered = Counter(
            "soulspot_events_redelivered",
            "Deliveries sent again after a nack or an ack timeout.",
            ("event_type", "consumer"),
            registry=r,
        )
        self.dead_lettered = Counter(
            "soulspot_events_dead_lettered",
            "Events parked on the dead-letter list.",
            ("event_type", "consumer", "reason"),
            registry=r,
        )
        self.lag = Gauge(
            "soulspot_consumer_lag",
            "Stored events matching a durable consumer that it has not acked.",
            ("consumer",),
            registry=r,
        )
        self.pipeline_steps = Counter(
            "soulspot_pipeline_steps",
            "Post-download pipeline steps by outcome (succeeded, failed, deferred, skipped).",
            ("capability", "outcome"),
            registry=r,
        )

    # -- capability proxy -----------------------------------------------------------------------

    def record_call(self, capability: str, module: str, code: str, seconds: float) -> None:
        """One forwarded attempt; `code` is a grpc.StatusCode name such as "OK"."""
        self.calls.labels(capability, module, code).inc()
        self.call_seconds.labels(capability, module).observe(seconds)

    def record_fallback(self, capability: str, from_module: str, to_module: str) -> None:
        self.fallbacks.labels(capability, from_module, to_module).inc()

    def set_breaker(self, module: str, state: str) -> None:
        """`state` is "closed", "half_open" or "open" (router.routing.breaker.BreakerState)."""
        self.breaker.labels(module).set(BREAKER_STATES.get(str(state), 2))

    # -- event bus ------------------------------------------------------------------------------

    def event_published(self, event_type: str, seconds: float | None = None) -> None:
        self.published.labels(event_type).inc()
        if seconds is not None:
            self.publish_seconds.labels(event_type).observe(seconds)

    def event_delivered(self, event_type: str, consumer: str, attempt: int = 1) -> None:
        """A delivery; attempts after the first count as redeliveries."""
        if attempt > 1:
            self.redelivered.labels(event_type, consumer).inc()
        else:
            self.delivered.labels(event_type, consumer).inc()

    def event_dead_lettered(self, event_type: str, consumer: str, reason: str) -> None:
        self.dead_lettered.labels(event_type, consumer, reason).inc()

    def set_consumer_lag(self, consumer: str, lag: int) -> None:
        self.lag.labels(consumer).set(lag)

    # -- pipeline -------------------------------------------------------------------------------

    def pipeline_step(self, capability: str, outcome: str) -> None:
        self.pipeline_steps.labels(capability, outcome).inc()


# One RouterMetrics per registry, dropped with its registry (tests make many).
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, RouterMetrics] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def router_metrics(metrics: MeshMetrics | None = None) -> RouterMetrics:
    """The router's series on `metrics`' registry (default: the process's current
    `default_metrics()`), registered there on first use."""
    registry = (metrics if metrics is not None else default_metrics()).registry
    with _lock:
        found = _by_registry.get(registry)
        if found is None:
            found = _by_registry[registry] = RouterMetrics(registry)
        return found
