"""Put the repository root on sys.path (`tests.standins`, the shared helpers), and give every
test its own state dir."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[4])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The module keeps its downloads under the state dir: one per test, never the cwd."""
    monkeypatch.setenv("SOULSPOT_STATE_DIR", str(tmp_path / "state"))
