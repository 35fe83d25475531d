"""Fixtures for the end-to-end flows: a mesh of real processes under a temporary folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.helpers.mesh import Mesh

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    async with Mesh(tmp_path) as the_mesh:
        yield the_mesh
