"""cancel_and_wait: the task has ended when it returns, and only its cancellation is swallowed
(not one of the caller's); cancel_all: every task has ended, whatever it ended with;
finish_within and cancel_within: no more than their time, even for a task that ignores its
cancellation; cancel_within ends a loop that lost one cancellation."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from services.kit.support.tasks import cancel_all, cancel_and_wait, cancel_within, finish_within


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


async def _unwinding_slowly(release: asyncio.Event) -> None:
    """A task that, once cancelled, waits for `release` before it ends."""
    try:
        await asyncio.Event().wait()
    finally:
        await release.wait()


async def test_a_cancellation_of_the_caller_while_it_waits_is_not_swallowed() -> None:
    release = asyncio.Event()
    inner = asyncio.create_task(_unwinding_slowly(release))
    went_on = asyncio.Event()

    async def stop() -> None:
        await cancel_and_wait(inner)
        went_on.set()  # the next step of a shutdown

    await asyncio.sleep(0)
    outer = asyncio.create_task(stop())
    await asyncio.sleep(0)
    outer.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert not went_on.is_set()
    assert inner.done()


async def test_cancel_all_passes_on_a_cancellation_of_the_caller() -> None:
    release = asyncio.Event()
    inner = asyncio.create_task(_unwinding_slowly(release))
    await asyncio.sleep(0)
    outer = asyncio.create_task(cancel_all([inner]))
    await asyncio.sleep(0)
    outer.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await outer


async def test_finish_within_gives_up_a_step_that_ignores_its_cancellation() -> None:
    given_up = asyncio.Event()

    async def stubborn() -> None:
        while not given_up.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    step = asyncio.ensure_future(stubborn())
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await finish_within(step, 0.05) is False
    assert loop.time() - began < 5
    assert not step.done()
    # Let it end, or the test's event loop could not close.
    given_up.set()
    step.cancel()
    await asyncio.wait([step], timeout=5)
    assert step.done()


async def test_finish_within_says_a_step_ended_and_raises_its_error() -> None:
    async def quick() -> None:
        await asyncio.sleep(0)

    async def broken() -> None:
        raise RuntimeError("could not")

    assert await finish_within(quick(), 5) is True
    with pytest.raises(RuntimeError, match="could not"):
        await finish_within(broken(), 5)


async def test_cancel_within_ends_a_loop_that_lost_one_cancellation() -> None:
    async def loop_losing_one() -> None:
        # As a request whose reply came as it was cancelled: the first one is lost.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await asyncio.Event().wait()  # the loop goes on, waiting for its next turn

    task = asyncio.create_task(loop_losing_one())
    await asyncio.sleep(0)
    assert await cancel_within(task, 10) is True
    assert task.cancelled()


async def test_cancel_within_gives_up_a_task_that_never_ends() -> None:
    given_up = asyncio.Event()

    async def stubborn() -> None:
        while not given_up.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await cancel_within(task, 0.3) is False
    assert loop.time() - began < 5
    given_up.set()
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.done()
