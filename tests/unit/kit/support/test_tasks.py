"""cancel_and_wait: the task has ended when it returns, and only its cancellation is swallowed;
cancel_all: every task has ended, whatever it ended with."""

from __future__ import annotations

import asyncio

import pytest

from services.kit.support.tasks import cancel_all, cancel_and_wait


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


async def test_cancel_all_ends_every_task_and_swallows_what_they_end_with() -> None:
    async def wait_forever() -> None:
        await asyncio.Event().wait()

    async def fail_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    tasks = {asyncio.create_task(wait_forever()), asyncio.create_task(fail_on_cancel())}
    for task in tasks:
        # A task that leaves the set when done: the set shrinks while they are awaited,
        # which must not break the waiting.
        task.add_done_callback(tasks.discard)
    ended = list(tasks)
    await asyncio.sleep(0)
    await cancel_all(tasks)
    assert all(task.done() for task in ended)
