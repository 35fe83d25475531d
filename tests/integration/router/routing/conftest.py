from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from services.kit.rpc.channel import open_channel
from soulspot.capabilities.v1 import search_pb2_grpc
from soulspot.router.v1 import (
    event_bus_pb2_grpc,
    registry_pb2_grpc,
    router_pb2_grpc,
    status_pb2_grpc,
)
from tests.helpers.fake_module import FakeModule
from tests.helpers.router import router_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import grpc

    from router.app import RouterApp


@pytest.fixture
async def router() -> AsyncIterator[RouterApp]:
    app = router_app()
    await app.start()
    yield app
    await app.stop(0)


@pytest.fixture
async def channel(router: RouterApp) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(router.address) as ch:
        yield ch


@pytest.fixture
def search(channel: grpc.aio.Channel) -> search_pb2_grpc.SearchServiceAsyncStub:
    return search_pb2_grpc.SearchServiceStub(channel)


@pytest.fixture
def router_stub(channel: grpc.aio.Channel) -> router_pb2_grpc.RouterServiceAsyncStub:
    """The deprecated RouterService, still served for existing callers."""
    return router_pb2_grpc.RouterServiceStub(channel)


@pytest.fixture
def registry_stub(channel: grpc.aio.Channel) -> registry_pb2_grpc.RegistryServiceAsyncStub:
    return registry_pb2_grpc.RegistryServiceStub(channel)


@pytest.fixture
def status_stub(channel: grpc.aio.Channel) -> status_pb2_grpc.StatusServiceAsyncStub:
    return status_pb2_grpc.StatusServiceStub(channel)


@pytest.fixture
def event_bus_stub(channel: grpc.aio.Channel) -> event_bus_pb2_grpc.EventBusServiceAsyncStub:
    return event_bus_pb2_grpc.EventBusServiceStub(channel)


@pytest.fixture
async def module(router: RouterApp) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Start a fake module and register it with the router: `await module("a", 10)`."""
    started: list[Any] = []

    async def make(name: str, priority: int = 0, *, register: bool = True, **kw: Any) -> Any:
        fake = FakeModule(name, priority, **kw)
        started.append(fake)
        await fake.start()
        if register:
            await fake.register(router.address)
        return fake

    yield make
    for fake in started:
        await fake.stop()
