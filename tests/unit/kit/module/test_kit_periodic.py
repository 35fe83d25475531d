"""Periodic: the step repeats at its interval, survives a failing run, and stops."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from services.kit.module.periodic import Periodic

if TYPE_CHECKING:
    import pytest


async def test_step_repeats_and_survives_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    enough = asyncio.Event()

    async def step() -> None:
        runs.append(len(runs))
        if len(runs) == 2:
            raise RuntimeError("backend probe crashed")
        if len(runs) == 4:
            enough.set()

    periodic = Periodic("probe", 0.01, step, first_at_once=True)
    periodic.start()
    await asyncio.wait_for(enough.wait(), 5)
    await periodic.stop()
    stopped_at = len(runs)
    await asyncio.sleep(0.05)
    assert len(runs) == stopped_at >= 4
    assert any("probe failed" in r.getMessage() for r in caplog.records)


async def test_first_run_waits_an_interval_unless_asked() -> None:
    runs: list[str] = []

    async def step() -> None:
        runs.append("ran")

    periodic = Periodic("probe", 30.0, step)
    periodic.start()
    await asyncio.sleep(0.05)
    await periodic.stop()
    assert runs == []
