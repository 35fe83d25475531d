from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from services.kit.rpc.errors import DeadlineExceeded
from services.kit.support import backoff
from services.kit.support.retry import call_with_retry
from tests.helpers.echo_service import Echo, SayRequest, say_stub


async def test_retries_unavailable_until_it_succeeds(channel: grpc.aio.Channel, echo: Echo) -> None:
    echo.fail_first = 2
    say = say_stub(channel)
    reply = await call_with_retry(
        lambda timeout: say(SayRequest(text="hi"), timeout=timeout), deadline_s=5
    )
    assert reply.text == "hi"
    assert echo.calls == 3


async def test_does_not_retry_invalid_argument(channel: grpc.aio.Channel, echo: Echo) -> None:
    say = say_stub(channel)
    code = grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call_with_retry(
            lambda timeout: say(SayRequest(text="x", fail_code=code.value[0]), timeout=timeout),
            deadline_s=5,
        )
    assert raised.value.code() == code
    assert echo.calls == 1


async def test_gives_up_at_the_overall_deadline(
    channel: grpc.aio.Channel, echo: Echo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every wait at the top of its step, so the schedule is known: 0.02, 0.04, 0.08, then
    # 0.1 s; after 0.54 s of waits alone no further attempt fits in 0.55 s.
    monkeypatch.setattr(backoff, "random_fraction", lambda: 0.999)
    echo.fail_first = 10_000
    say = say_stub(channel)
    timeouts: list[float] = []

    async def attempt(timeout: float) -> object:  # noqa: ASYNC109 (the call_with_retry contract)
        timeouts.append(timeout)
        return await say(SayRequest(text="hi"), timeout=timeout)

    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call_with_retry(attempt, deadline_s=0.6, initial=0.02, max_backoff=0.1)
    elapsed = time.monotonic() - started
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert elapsed < 0.6 + 0.5
    # At least the attempts the early waits allow, at most the eight the waits leave room
    # for: waits that stopped growing (or were zero) would fit many more.
    assert 3 <= echo.calls <= 8
    # Each attempt got the time left, never more than the whole deadline.
    assert timeouts == sorted(timeouts, reverse=True)
    assert all(0 < t <= 0.6 for t in timeouts)


async def test_an_attempt_that_ignores_its_timeout_is_cut_at_the_deadline() -> None:
    async def hangs(timeout: float) -> None:  # noqa: ASYNC109 (the call_with_retry contract)
        await asyncio.sleep(10)

    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await call_with_retry(hangs, deadline_s=0.2)
    assert time.monotonic() - started < 1
