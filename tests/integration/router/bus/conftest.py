from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.helpers.bus import BusHarness

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[BusHarness]:
    async with BusHarness(tmp_path) as h:
        yield h
