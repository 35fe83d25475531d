"""services.kit.support.backoff: waits that grow to a cap, jittered as stated, bounded by a
deadline when call_with_retry drives them."""

from __future__ import annotations

import asyncio
import random
import types

import pytest

from services.kit.rpc.errors import Unavailable
from services.kit.support import backoff, retry
from services.kit.support.backoff import Backoff, BackoffPolicy, pause
from services.kit.support.retry import call_with_retry
from tests.helpers.recorded_waits import RecordedWaits


def test_waits_grow_by_the_multiplier_up_to_the_cap() -> None:
    policy = BackoffPolicy(initial_s=0.1, multiplier=2.0, cap_s=1.0, jitter="none")
    waits = list(zip(range(7), policy.delays(), strict=False))
    assert [round(w, 6) for _, w in waits] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_equal_jitter_draws_between_half_and_all_of_each_step() -> None:
    policy = BackoffPolicy(initial_s=0.1, cap_s=3.2, jitter="equal")
    draws = random.Random(7)
    for failures in range(8):
        top = policy.ceiling(failures)
        waits = [policy.delay(failures, draws.random()) for _ in range(200)]
        assert all(top / 2 <= w <= top for w in waits)
        # Jittered, not a constant: the draws cover most of the allowed half.
        assert max(waits) - min(waits) > 0.4 * top


def test_full_jitter_draws_from_zero_to_each_step() -> None:
    policy = BackoffPolicy(initial_s=0.05, cap_s=2.0, jitter="full")
    draws = random.Random(11)
    waits = [policy.delay(3, draws.random()) for _ in range(500)]
    assert all(0 <= w <= 0.4 for w in waits)
    assert min(waits) < 0.05
    assert max(waits) > 0.35


def test_a_policy_that_would_spin_or_shrink_is_refused() -> None:
    with pytest.raises(ValueError, match="initial_s"):
        BackoffPolicy(initial_s=0)
    with pytest.raises(ValueError, match="multiplier"):
        BackoffPolicy(initial_s=0.1, multiplier=0.5)
    with pytest.raises(ValueError, match="cap_s"):
        BackoffPolicy(initial_s=1.0, cap_s=0.5)


async def test_a_loop_waits_longer_after_each_failure_and_starts_over_after_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = RecordedWaits.install(monkeypatch, wanted=100)
    loop = Backoff(BackoffPolicy(initial_s=0.1, cap_s=0.5, jitter="none"))
    for _ in range(5):
        await loop.wait()
    loop.reset()
    await loop.wait()
    loop.to_cap()
    await loop.wait()
    assert [round(w, 6) for w in recorded.waits] == [0.1, 0.2, 0.4, 0.5, 0.5, 0.1, 0.5]


async def test_the_module_random_source_jitters_every_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = RecordedWaits.install(monkeypatch, wanted=100)
    draws = iter([0.0, 0.5, 0.999])
    monkeypatch.setattr(backoff, "random_fraction", lambda: next(draws))
    loop = Backoff(BackoffPolicy(initial_s=1.0, cap_s=100.0, jitter="equal"))
    for _ in range(3):
        await loop.wait()
    assert recorded.waits == pytest.approx([0.5, 1.5, 3.998])


async def test_an_interrupt_cuts_a_pause_short() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    started = loop.time()
    await pause(30.0, interrupt=stop)
    assert loop.time() - started < 5


async def test_attempts_within_a_deadline_are_bounded_by_the_growing_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A clock that only the waits move: the schedule alone decides how many attempts fit.
    now = [1000.0]
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)
        now[0] += delay

    monkeypatch.setattr(backoff, "sleep", sleep)
    monkeypatch.setattr(backoff, "random_fraction", lambda: 0.999)
    monkeypatch.setattr(retry, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    calls = 0

    async def down(timeout: float) -> None:  # noqa: ASYNC109 (the call_with_retry contract)
        nonlocal calls
        calls += 1
        raise Unavailable("down")

    with pytest.raises(Unavailable):
        await call_with_retry(down, deadline_s=10.0, initial=0.05, max_backoff=2.0)
    # Full jitter at the top of each step: 0.05, 0.1, ... 1.6, then 2.0 until the next wait
    # would pass 9.95 s (the deadline less the minimum attempt slice).
    assert waits == pytest.approx([0.04995, 0.0999, 0.1998, 0.3996, 0.7992, 1.5984] + [1.998] * 3)
    assert calls == 10
