"""Records every wait the kit's backoff asks for, instead of sleeping it.

`RecordedWaits.install(monkeypatch)` replaces `services.kit.support.backoff.sleep`; each wait
is appended to `.waits` and the caller only yields to the loop, so a retry loop runs through
its schedule at once and a test reads the schedule back. `unreachable_address()` gives the
loop a peer that refuses every connection.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from services.kit.support import backoff

if TYPE_CHECKING:
    import pytest

    from services.kit.support.backoff import BackoffPolicy

# The real sleep, kept before any test patches the module's.
_real_sleep = asyncio.sleep


class RecordedWaits:
    """The waits a retry loop asked for, in order; `enough` is set once `wanted` arrived."""

    def __init__(self, wanted: int = 5) -> None:
        self.waits: list[float] = []
        self.wanted = wanted
        self.enough = asyncio.Event()

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch, wanted: int = 5) -> RecordedWaits:
        recorded = cls(wanted)
        monkeypatch.setattr(backoff, "sleep", recorded.sleep)
        return recorded

    async def sleep(self, delay: float) -> None:
        self.waits.append(delay)
        if len(self.waits) >= self.wanted:
            self.enough.set()
        # A short real pause: the loop under test must not starve the test's own tasks.
        await _real_sleep(0.001)

    async def wait_for(self, within_s: float = 10.0) -> list[float]:
        async with asyncio.timeout(within_s):
            await self.enough.wait()
        return self.waits[: self.wanted]


def assert_follows(waits: list[float], policy: BackoffPolicy) -> None:
    """Each wait lies within its step of the policy: between half and all of the ceiling for
    equal jitter, the ceiling itself without jitter. So waits grow, and none is zero."""
    for failures, wait in enumerate(waits):
        top = policy.ceiling(failures)
        low = {"none": top, "equal": top / 2, "full": 0.0}[policy.jitter]
        assert low - 1e-9 <= wait <= top + 1e-9, (failures, wait, waits)
        assert wait > 0, waits
    assert waits[-1] > waits[0], waits


def unreachable_address() -> str:
    """A loopback address where nothing listens: a port just bound and released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return f"127.0.0.1:{port}"
