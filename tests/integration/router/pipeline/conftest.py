"""Fixtures of the pipeline tests against a real nats-server: the router stand-in (the server
is the shared `nats_server` fixture)."""

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
