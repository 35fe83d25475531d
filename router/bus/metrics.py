"""The bus's Prometheus metrics: the router's series (router.metrics) with their children
cached per label set.

`labels()` costs a lock and a tuple lookup; publish and delivery count once per event, so the
children are looked up once per event type (and consumer) and kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from router.metrics import router_metrics

if TYPE_CHECKING:
    from services.kit.observability.metrics import MeshMetrics


class BusMetrics:
    """Counts publishes, deliveries, redeliveries, dead letters and consumer lag."""

    def __init__(self, metrics: MeshMetrics) -> None:
        """Counts on the router's series on `metrics`' registry."""
        self.metrics = router_metrics(metrics)
        self._published: dict[str, tuple[Any, Any]] = {}
        self._delivered: dict[tuple[str, str, bool], Any] = {}
        self._dead: dict[tuple[str, str, str], Any] = {}
        self._lag: dict[str, Any] = {}

    def published(self, event_type: str, seconds: float) -> None:
        children = self._published.get(event_type)
        if children is None:
            m = self.metrics
            children = (m.published.labels(event_type), m.publish_seconds.labels(event_type))
            self._published[event_type] = children
        children[0].inc()
        children[1].observe(seconds)

    def delivered(self, event_type: str, consumer: str, attempt: int, count: int = 1) -> None:
        """`count` deliveries; attempts after the first count as redeliveries."""
        key = (event_type, consumer, attempt > 1)
        child = self._delivered.get(key)
        if child is None:
            counter = self.metrics.redelivered if key[2] else self.metrics.delivered
            child = self._delivered[key] = counter.labels(event_type, consumer)
        child.inc(count)

    def dead_lettered(self, event_type: str, consumer: str, reason: str) -> None:
        key = (event_type, consumer, reason)
        child = self._dead.get(key)
        if child is None:
            child = self._dead[key] = self.metrics.dead_lettered.labels(*key)
        child.inc()

    def lag(self, consumer: str, lag: int) -> None:
        child = self._lag.get(consumer)
        if child is None:
            child = self._lag[consumer] = self.metrics.lag.labels(consumer)
        child.set(lag)


def reason_label(reason_name: str) -> str:
    """DEAD_LETTER_REASON_MAX_ATTEMPTS -> max_attempts."""
    return reason_name.removeprefix("DEAD_LETTER_REASON_").lower()
