"""Fixtures for the end-to-end flows: a mesh of real processes under a temporary folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# `tests` is not an installed package: put the repository root on the path for tests.e2e.mesh
# and tests.standins, however pytest was launched.
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.e2e.mesh import Mesh  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    async with Mesh(tmp_path) as the_mesh:
        yield the_mesh
