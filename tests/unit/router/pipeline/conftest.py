"""Fixtures of the pipeline engine's unit tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.helpers.pipeline_standin import Mesh

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    mesh = Mesh()
    async with mesh.server:
        yield mesh
