"""The bus integration tests' harness: a bus on SQLite, or on JetStream for the files that
test the consumer promises (subscribe, ordering, dead letters and replay, inactive
consumers), which run on both stores."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from tests.helpers.bus import BusHarness, bus_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

# The files whose `harness` tests run on both stores; the others run on the store the
# environment names (SOULSPOT_BUS__BACKEND, SQLite by default).
ON_BOTH_STORES = {
    "test_bus_subscribe",
    "test_bus_ordering",
    "test_bus_dead_letter_replay",
    "test_bus_inactive_consumers",
    # A router process with its own nats-server on JetStream (about 10 s each).
    "test_bus_under_load",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bus_backend" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    default = os.environ.get("SOULSPOT_BUS__BACKEND", "sqlite")
    backends = ["sqlite", "jetstream"] if module in ON_BOTH_STORES else [default]
    metafunc.parametrize("bus_backend", backends)


@pytest.fixture
async def harness(tmp_path: Path, bus_backend: str) -> AsyncIterator[BusHarness]:
    async with BusHarness(tmp_path, bus_settings(backend=bus_backend)) as h:
        yield h
