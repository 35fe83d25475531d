"""Retry transient failures with jittered exponential backoff, inside one overall deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, TypeVar

from services.kit.rpc.errors import DeadlineExceeded, is_transient
from services.kit.support.backoff import Backoff, BackoffPolicy, pause

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

_T = TypeVar("_T")
_log = logging.getLogger(__name__)


# The least time left worth starting another attempt with: this long, or this share of a
# shorter deadline.
MIN_ATTEMPT_S = 0.05
MIN_ATTEMPT_SHARE = 0.1


async def call_with_retry(
    fn: Callable[[float], Awaitable[_T]],
    *,
    deadline_s: float,
    is_retryable: Callable[[BaseException], bool] = is_transient,
    initial: float = 0.05,
    max_backoff: float = 2.0,
) -> _T:
    """Await `fn(timeout)` until it succeeds, fails for good, or the deadline is spent.

    Each attempt receives the time left as its timeout (pass it to the gRPC call), so the
    attempts together never outlive `deadline_s`. Waits come from the kit's one backoff with
    full jitter, uniform(0, `initial` * 2^n capped at `max_backoff`); no attempt starts if its
    wait would leave it less than a minimum slice of the deadline (an attempt with a few
    milliseconds left can only time out, hiding the error that mattered).
    The last error is raised as it is.
    """
    deadline = time.monotonic() + deadline_s
    last_start = max(0.0, deadline_s - min(MIN_ATTEMPT_S, deadline_s * MIN_ATTEMPT_SHARE))

    async def attempt() -> _T:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(f"deadline of {deadline_s}s spent before the attempt")
        try:
            # Guards against an fn that ignores its timeout argument.
            async with asyncio.timeout(remaining):
                return await fn(remaining)
        except TimeoutError as err:
            raise DeadlineExceeded(f"deadline of {deadline_s}s exceeded") from err

    backoff = Backoff(BackoffPolicy(initial_s=initial, cap_s=max_backoff, jitter="full"))
    started = deadline - deadline_s
    while True:
        try:
            return await attempt()
        except Exception as err:
            if not is_retryable(err):
                raise
            delay = backoff.next_delay()
            if time.monotonic() - started + delay >= last_start:
                raise
            _log.debug(
                "retrying after %r",
                err,
                extra={"attempt": backoff.failures, "sleep_s": delay},
            )
        await pause(delay)
