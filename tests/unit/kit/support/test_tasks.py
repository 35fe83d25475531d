"""cancel_and_wait: the task has ended when it returns, and only its cancellation is swallowed."""

from __future__ import annotations

import asyncio

import pytest

from services.kit.support.tasks import cancel_and_wait


async def test_the_task_has_unwound_when_it_returns() -> None:
    unwound = asyncio.Event()

    async def hold() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            unwound.set()

    task = asyncio.create_task(hold())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()
    assert unwound.is_set()


async def test_none_is_nothing_to_end() -> None:
    await cancel_and_wait(None)


async def test_an_error_the_task_ends_with_is_raised() -> None:
    async def fail_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(fail_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(task)
