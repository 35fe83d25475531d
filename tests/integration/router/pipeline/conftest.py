"""Fixtures of the pipeline tests against a real nats-server: the router stand-in and one
JetStream server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.helpers.nats_server import NatsServerProcess, start_nats_server
from tests.helpers.pipeline_standin import Mesh

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    mesh = Mesh()
    async with mesh.server:
        yield mesh


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServerProcess]:
    server = start_nats_server(tmp_path / "nats")
    try:
        yield server
    finally:
        server.stop()
