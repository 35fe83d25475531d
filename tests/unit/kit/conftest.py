"""Fixtures for the kit tests: a KitServer running the runtime-built Echo service."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from services.kit.rpc.channel import open_channel
from services.kit.rpc.server import KitServer
from tests.helpers.echo_service import Echo

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import grpc


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
async def server(echo: Echo) -> AsyncIterator[KitServer]:
    kit_server = KitServer("kittest", validate_requests=True, grace_s=1.0)
    echo.add_to(kit_server)
    async with kit_server:
        yield kit_server


@pytest.fixture
async def channel(server: KitServer) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(server.address) as ch:
        yield ch
