"""Ending a background task: cancel it and wait until it has unwound."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel `task` (None: nothing runs) and wait for it to end, so whatever it holds is
    released before the caller goes on; its cancellation is swallowed, any other error it
    ends with is raised here."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
