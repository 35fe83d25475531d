"""Fixtures for the bus's end-to-end tests: a router process to start, kill -9 and restart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.helpers.bus_process import BusProcess

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def bus_process(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BusProcess]:
    # Parametrized indirectly with SOULSPOT_BUS__* settings ({"synchronous": "NORMAL"}).
    proc = BusProcess(tmp_path, **getattr(request, "param", {}))
    yield proc
    proc.stop()
