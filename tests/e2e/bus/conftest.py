from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# The envelope builders and the raw subscriber are shared with the integration tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration" / "bus"))

from tests.e2e.bus.bus_process import BusProcess

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def bus_process(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BusProcess]:
    # Parametrized indirectly with SOULSPOT_BUS__* settings ({"synchronous": "NORMAL"}).
    proc = BusProcess(tmp_path, **getattr(request, "param", {}))
    yield proc
    proc.stop()
