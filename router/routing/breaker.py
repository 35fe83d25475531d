"""A per-module circuit breaker: consecutive failures open it, a cool-down half-opens it."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import TYPE_CHECKING

from router.metrics import router_metrics

if TYPE_CHECKING:
    from collections.abc import Callable

    from services.kit.observability.metrics import MeshMetrics


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed: calls flow. Open: calls are refused until the cool-down ends. Half-open: one
    trial call at a time; its success closes the breaker, its failure opens it again."""

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
        *,
        name: str = "",
        metrics: MeshMetrics | None = None,
    ) -> None:
        self.failure_threshold = max(1, failure_threshold)
        # The module it guards, for the breaker_state gauge (no gauge without metrics).
        self.name = name
        self._metrics = router_metrics(metrics) if metrics is not None else None
        self.cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self.publish()

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """Whether a call may go to the module now (claims the trial when half-open)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        if self._state is BreakerState.OPEN:
            self._set(BreakerState.HALF_OPEN)
        if self._trial_in_flight:
            return False
        self._trial_in_flight = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._trial_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        self._trial_in_flight = False
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            if self._state is not BreakerState.OPEN:
                self._set(BreakerState.OPEN)

    def release(self) -> None:
        """A call that proves nothing either way (cancelled by its caller) ended."""
        self._trial_in_flight = False

    def reset(self) -> None:
        self._failures = 0
        self._trial_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def publish(self) -> None:
        """Put the current state on the gauge. State changes do it themselves; the clock's
        open -> half-open turn happens without a call, so its owner calls this then."""
        if self._metrics is not None:
            self._metrics.set_breaker(self.name, self.state.value)

    def _set(self, state: BreakerState) -> None:
        self._state = state
        if self._metrics is not None:
            self._metrics.set_breaker(self.name, state.value)
        if self._on_change is not None:
            self._on_change(state)
