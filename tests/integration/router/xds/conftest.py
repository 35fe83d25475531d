"""An in-process router serving xDS, and fake modules registered with it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers.fake_module import FakeModule
from tests.helpers.router import router_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from router.app import RouterApp


@pytest.fixture
async def xds_router() -> AsyncIterator[RouterApp]:
    app = router_app(xds={"warmup_s": 0, "max_streams_per_identity": 3, "max_resource_names": 8})
    await app.start()
    yield app
    await app.stop(0)


@pytest.fixture
async def xds_module(xds_router: RouterApp) -> AsyncIterator[Callable[..., Awaitable[FakeModule]]]:
    """Start a fake module and register it with the router: `await xds_module("a", 10)`."""
    started: list[FakeModule] = []

    async def make(name: str, priority: int = 0, **kw: Any) -> FakeModule:
        fake = FakeModule(name, priority, **kw)
        started.append(fake)
        await fake.start()
        await fake.register(xds_router.address)
        return fake

    yield make
    for fake in started:
        await fake.stop()
