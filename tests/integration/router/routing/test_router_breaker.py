from __future__ import annotations

from typing import TYPE_CHECKING

from router.routing.breaker import BreakerState, CircuitBreaker
from router.settings import RouterSettings

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _state(breaker: CircuitBreaker) -> str:
    # A function, so each check reads the clock-dependent state afresh (no type narrowing).
    return breaker.state.value


def test_consecutive_failures_open_then_cool_down_half_opens_one_trial() -> None:
    clock = _Clock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(3, 2.0, clock=clock, on_change=changes.append)
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()  # a success in between resets the count
    for _ in range(2):
        breaker.record_failure()
    assert _state(breaker) == "closed"
    breaker.record_failure()
    assert _state(breaker) == "open"
    assert not breaker.allow()
    clock.now += 2.0
    assert _state(breaker) == "half_open"
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.record_failure()
    assert _state(breaker) == "open"
    clock.now += 2.0
    assert breaker.allow()
    breaker.record_success()
    assert _state(breaker) == "closed"
    assert changes == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_cancelled_trial_releases_the_slot() -> None:
    clock = _Clock()
    breaker = CircuitBreaker(1, 1.0, clock=clock)
    breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_static_modules_come_from_the_yaml_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "soulspot.yaml"
    config.write_text(
        "router:\n"
        "  address: 127.0.0.1:0\n"
        "  modules:\n"
        "    - name: folder\n"
        "      address: 127.0.0.1:50064\n"
        "      capabilities:\n"
        "        - {capability: download.track, priority: 1, required_modules: [library]}\n"
    )
    monkeypatch.setenv("SOULSPOT_CONFIG", str(config))
    monkeypatch.setenv("SOULSPOT_ROUTER__BREAKER_FAILURES", "7")
    settings = RouterSettings()
    (folder,) = settings.router.modules
    assert folder.name == "folder"
    assert folder.capabilities[0].required_modules == ["library"]
    assert settings.router.breaker_failures == 7
