from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import grpc
import pytest

from services.kit.rpc.channel import open_channel, wait_for_ready
from tests.helpers.echo_service import SayRequest, say_stub

ROOT = Path(__file__).resolve().parents[4]


async def test_sigterm_lets_in_flight_call_finish_and_exits_zero() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.helpers.echo_server",
        "5",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        port = int((await asyncio.wait_for(proc.stdout.readline(), 10)).decode())
        address = f"127.0.0.1:{port}"
        await wait_for_ready(address, 5)
        async with open_channel(address) as channel:
            say = say_stub(channel)
            in_flight = asyncio.ensure_future(say(SayRequest(text="slow", delay_ms=1000)))
            await asyncio.sleep(0.3)  # the call is now running in the handler
            sent_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            reply = await asyncio.wait_for(in_flight, 5)
            assert reply.text == "slow"
            # New calls are refused once shutdown began.
            await asyncio.sleep(0.1)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await say(SayRequest(text="late"), timeout=1)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        returncode = await asyncio.wait_for(proc.wait(), 10)
        # It exits once the call is done, not at the end of the 5 s grace period.
        assert time.monotonic() - sent_at < 4
        assert returncode == 0
        stderr = (await proc.stderr.read()).decode()
        assert "received SIGTERM" in stderr
        assert '"grpc_code": "OK"' in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
