"""Ending background tasks: cancel them and wait until they have unwound."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["cancel_all", "cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel `task` (None: nothing runs) and wait for it to end, so whatever it holds is
    released before the caller goes on; its cancellation is swallowed, any other error it
    ends with is raised here."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def cancel_all(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel every task at once, then wait for each to end: for work being given up at
    shutdown, so what any of them ends with (cancelled or an error) is swallowed."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
