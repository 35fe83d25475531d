"""Fixtures for the module unit tests: every test keeps the module's state under its own
temporary dir."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(autouse=True)
def _module_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module keeps its downloads and databases under the state dir: one per test, never the
    working directory."""
    monkeypatch.setenv("SOULSPOT_STATE_DIR", str(tmp_path / "state"))
