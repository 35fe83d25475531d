"""The router's start-up retry for JetStream: each failed try is undone and reported, the waits
are the kit's backoff, and it gives up once its wait has passed."""

from __future__ import annotations

import pytest

from router.bus.jetstream.startup import START_BACKOFF, JetStreamUnreachable, start_when_reachable
from services.kit.support import backoff

SERVERS = ["nats://nats-a:4222", "nats://nats-b:4222"]


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the loop asks for, without waiting them."""
    asked: list[float] = []

    async def recorded(delay: float) -> None:
        asked.append(delay)

    monkeypatch.setattr(backoff, "sleep", recorded)
    monkeypatch.setattr(backoff, "random_fraction", lambda: 1.0)
    return asked


async def test_failed_tries_are_undone_reported_and_retried_under_the_backoff(
    waits: list[float],
) -> None:
    tries: list[str] = []
    reasons: list[str] = []

    async def start() -> None:
        tries.append("start")
        if tries.count("start") < 4:
            raise OSError("connection refused")

    async def undo() -> None:
        tries.append("undo")

    await start_when_reachable(
        start, undo, servers=SERVERS, give_up_after_s=0, on_waiting=reasons.append
    )

    assert tries == ["start", "undo"] * 3 + ["start"]
    assert (
        reasons
        == ["waiting for JetStream at nats://nats-a:4222, nats://nats-b:4222 (connection refused)"]
        * 3
    )
    assert waits == [START_BACKOFF.ceiling(n) for n in range(3)]


async def test_it_gives_up_once_its_wait_has_passed(waits: list[float]) -> None:
    async def start() -> None:
        raise TimeoutError

    async def undo() -> None:
        return None

    with pytest.raises(JetStreamUnreachable, match=r"SOULSPOT_BUS__NATS_START_WAIT_S=0\.001"):
        await start_when_reachable(start, undo, servers=SERVERS, give_up_after_s=0.001)
    # No wait beyond what is left of the start-up wait.
    assert all(w <= 0.001 for w in waits)
