"""Ending background tasks: cancel them and wait until they have unwound."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable

__all__ = ["cancel_all", "cancel_and_wait", "cancel_within", "finish_within"]

# How often cancel_within asks again (see there).
CANCEL_AGAIN_S = 0.25


def _cancelling() -> int:
    """How many cancellations of the running task are pending (0 outside a task)."""
    current = asyncio.current_task()
    return current.cancelling() if current is not None else 0


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel `task` (None: nothing runs) and wait for it to end, so whatever it holds is
    released before the caller goes on; its cancellation is swallowed, any other error it
    ends with is raised here. A cancellation of the caller itself while it waits is not
    swallowed: a shutdown that is being given up (a timeout around it, an event loop
    closing) must not go on to its next step as if nothing happened."""
    if task is None:
        return
    before = _cancelling()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if _cancelling() > before:
            raise


async def cancel_all(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel every task at once, then wait for each to end: for work being given up at
    shutdown, so what any of them ends with (cancelled or an error) is swallowed; a
    cancellation of the caller itself is not (see cancel_and_wait)."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    before = _cancelling()
    for task in pending:
        try:
            await task
        except asyncio.CancelledError:
            if _cancelling() > before:
                raise
        except Exception:  # given up: what it ends with is nobody's
            pass


async def finish_within(step: Awaitable[Any], within_s: float) -> bool:
    """Await `step` for at most `within_s`: True once it ended in time (an error it ended
    with is raised here), False when it did not. A step out of time is cancelled and left
    to unwind on its own, not waited for: one that waits on a peer that never answers, or
    swallows its cancellation, cannot hold the caller (for shutdown steps: a stop must
    end). A cancellation of the caller cancels the step too."""
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait([task], timeout=max(0.0, within_s))
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        task.result()
        return True
    task.cancel()
    task.add_done_callback(_retrieve)
    return False


def _retrieve(task: asyncio.Future[Any]) -> None:
    """What a task given up ends with is nobody's: retrieved, so it is not reported lost."""
    if not task.cancelled():
        task.exception()


async def cancel_within(task: asyncio.Future[Any] | None, within_s: float) -> bool:
    """Cancel `task` and wait at most `within_s` for it to end, cancelling it again every
    CANCEL_AGAIN_S meanwhile: for a background loop with nothing to clean up, whose
    cancellation may be lost inside it (on Python 3.11 `asyncio.wait_for`, which nats-py's
    requests use, returns a reply that arrived as it was cancelled; nats-py swallows one
    while it flushes), so that one lost cancellation cannot hold a shutdown forever. True
    once it ended (what it ended with is swallowed); a cancellation of the caller is not."""
    if task is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not task.done() and (remaining := deadline - loop.time()) > 0:
        task.cancel()
        await asyncio.wait([task], timeout=min(remaining, CANCEL_AGAIN_S))
    if not task.done():
        task.cancel()
        task.add_done_callback(_retrieve)
        return False
    _retrieve(task)
    return True
