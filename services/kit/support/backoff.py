"""The one backoff of the mesh: how long a retry loop waits after each failure, and the wait.

A `BackoffPolicy` states the numbers (first wait, growth, cap, jitter); a `Backoff` is one
loop's running count of failures and yields the next wait; `pause` sleeps through the
module-level `sleep` and `random_fraction` so that tests can patch both. Every retry loop of the
kit uses these, so a wait that stops growing or is no longer jittered shows in one place.

Jitter kinds, named for what they draw from the capped exponential ceiling `d`:
- "none": exactly `d` (a service that asks for a fixed schedule).
- "equal": uniform(d/2, d): never less than half, so a loop cannot spin, yet peers spread out.
- "full": uniform(0, d): the widest spread, for calls bounded by an overall deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["Backoff", "BackoffPolicy", "Jitter", "pause", "random_fraction", "sleep"]

Jitter = Literal["none", "equal", "full"]

# Looked up at call time, so a test patches `services.kit.support.backoff.sleep` (or
# `random_fraction`) and sees every wait of every loop.
sleep = asyncio.sleep
random_fraction = random.random

# Failures past which the ceiling no longer changes (any sane policy reached its cap long before).
_EXPONENT_LIMIT = 64


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Waits that start at `initial_s`, grow by `multiplier` per failure up to `cap_s`, jittered.

    The n-th wait (n from 0) is drawn below `min(cap_s, initial_s * multiplier**n)`; see the
    module docstring for the jitter kinds.
    """

    initial_s: float
    multiplier: float = 2.0
    cap_s: float = 10.0
    jitter: Jitter = "equal"

    def __post_init__(self) -> None:
        # A zero first wait or a multiplier below one makes a retry loop spin against a peer
        # that is down; refuse it where the policy is written rather than in production.
        if self.initial_s <= 0:
            raise ValueError(f"backoff initial_s must be > 0, not {self.initial_s}")
        if self.multiplier < 1:
            raise ValueError(f"backoff multiplier must be >= 1, not {self.multiplier}")
        if self.cap_s < self.initial_s:
            raise ValueError(f"backoff cap_s {self.cap_s} is below initial_s {self.initial_s}")
        if self.jitter not in ("none", "equal", "full"):
            raise ValueError(f"unknown jitter kind {self.jitter!r}")

    def ceiling(self, failures: int) -> float:
        """The most the wait after `failures` earlier failures (0 for the first) can be."""
        # Capping the exponent first keeps a long outage from overflowing the float.
        exponent = min(failures, _EXPONENT_LIMIT)
        return min(self.cap_s, self.initial_s * self.multiplier**exponent)

    def delay(self, failures: int, fraction: float | None = None) -> float:
        """The wait after `failures` earlier failures; `fraction` in [0, 1) draws the jitter."""
        top = self.ceiling(failures)
        if self.jitter == "none":
            return top
        drawn = random_fraction() if fraction is None else fraction
        if self.jitter == "equal":
            return top / 2 + drawn * (top / 2)
        return drawn * top

    def delays(self, rand: Callable[[], float] | None = None) -> Iterator[float]:
        """The endless sequence of waits of a loop that never succeeds."""
        failures = 0
        while True:
            yield self.delay(failures, None if rand is None else rand())
            failures += 1


class Backoff:
    """One retry loop's waits: each failure waits longer, a success starts over.

    `rand` (a callable returning a fraction in [0, 1)) replaces the module's random source for
    this loop; tests pass a seeded `random.Random(...).random`.
    """

    def __init__(self, policy: BackoffPolicy, *, rand: Callable[[], float] | None = None) -> None:
        self.policy = policy
        self.failures = 0
        self._rand = rand

    def reset(self) -> None:
        """The loop succeeded: the next failure waits the shortest time again."""
        self.failures = 0

    def to_cap(self) -> None:
        """The next waits are the longest the policy allows (a peer refused, not failed)."""
        self.failures = max(self.failures, _EXPONENT_LIMIT)

    def next_delay(self) -> float:
        """The wait for the failure just seen; counts it."""
        delay = self.policy.delay(self.failures, None if self._rand is None else self._rand())
        self.failures += 1
        return delay

    async def wait(self, *, interrupt: asyncio.Event | None = None) -> float:
        """Sleep the next wait (cut short when `interrupt` is set); returns the wait drawn."""
        delay = self.next_delay()
        await pause(delay, interrupt=interrupt)
        return delay


async def pause(delay: float, *, interrupt: asyncio.Event | None = None) -> None:
    """Sleep `delay` seconds through the module's `sleep`, or less once `interrupt` is set."""
    if interrupt is None:
        await sleep(delay)
        return
    if interrupt.is_set():
        return
    sleeper = asyncio.ensure_future(sleep(delay))
    waiter = asyncio.ensure_future(interrupt.wait())
    try:
        await asyncio.wait((sleeper, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waiter):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
