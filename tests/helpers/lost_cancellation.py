"""A store call that loses one cancellation, as a nats-py request can on Python 3.11 (the reply
and the cancellation meet inside `asyncio.wait_for`): for tests that a stop still ends."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

_T = TypeVar("_T")


class LosingOneCancellation(Generic[_T]):
    """Wraps `real`: the first call waits until it is cancelled, loses that cancellation
    (`lost`), then makes the real call and returns its answer, as a request whose reply came
    as it was cancelled does; later calls go straight through. `entered` is set once the
    first call waits, so a test stops the loop while it is in the call."""

    def __init__(self, real: Callable[..., Awaitable[_T]]) -> None:
        self._real = real
        self.entered = asyncio.Event()
        self.lost = asyncio.Event()

    async def __call__(self, *args: Any, **kwargs: Any) -> _T:
        if not self.entered.is_set():
            self.entered.set()
            try:
                await asyncio.Event().wait()  # until cancelled
            except asyncio.CancelledError:
                self.lost.set()
        return await self._real(*args, **kwargs)


async def ended_within(step: Awaitable[Any], within_s: float) -> None:
    """Await `step`, failing the test (not hanging it) when it has not ended within `within_s`."""
    async with asyncio.timeout(within_s):
        await step
