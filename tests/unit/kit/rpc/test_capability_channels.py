"""CapabilityChannels: xds:/// when the router's health reports its ADS service SERVING, the
router's channel otherwise, asked again through the kit's backoff until the router serves it."""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest

from services.kit.rpc.capability_channels import (
    ADS_SERVICE,
    RECHECK_BACKOFF,
    CapabilityChannels,
)
from services.kit.rpc.channel import open_channel
from services.kit.rpc.server import KitServer
from services.kit.rpc.xds_bootstrap import BOOTSTRAP_CONFIG_ENV, BOOTSTRAP_FILE_ENV
from services.kit.security.identity import Identity
from tests.helpers.recorded_waits import RecordedWaits, assert_follows, unreachable_address

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SERVICE = "soulspot.capabilities.v1.LibraryService"
ME = Identity.module("caller")


@pytest.fixture
def bootstrap_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the channels write into the environment is undone after the test."""
    monkeypatch.delenv(BOOTSTRAP_CONFIG_ENV, raising=False)
    monkeypatch.setenv(BOOTSTRAP_FILE_ENV, "/nonexistent/bootstrap.json")


@pytest.fixture
async def router() -> AsyncIterator[KitServer]:
    """A server standing in for the router's health service: only the health answers matter."""
    server = KitServer("router", "127.0.0.1:0")
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


@asynccontextmanager
async def _channels(address: str, *, xds: bool = True) -> AsyncIterator[CapabilityChannels]:
    """Started channels with a router channel of their own, both closed at the end."""
    router_channel = open_channel(address, interceptors=())
    try:
        async with CapabilityChannels(router_channel, address, identity=ME, xds=xds) as channels:
            yield channels
    finally:
        await router_channel.close()


@pytest.mark.usefixtures("bootstrap_env")
async def test_uses_xds_when_the_router_serves_ads_and_installs_its_bootstrap(
    router: KitServer,
) -> None:
    await router.health.set_status(ADS_SERVICE, True)
    async with _channels(router.address) as channels:
        assert channels.uses_xds
        assert channels.target(SERVICE) == f"xds:///{SERVICE}"
    bootstrap = json.loads(os.environ[BOOTSTRAP_CONFIG_ENV])
    assert bootstrap["xds_servers"][0]["server_uri"] == router.address
    assert bootstrap["node"]["id"] == ME.uri
    # A bootstrap file would win over the JSON in gRPC, so it is gone.
    assert BOOTSTRAP_FILE_ENV not in os.environ


@pytest.mark.usefixtures("bootstrap_env")
async def test_uses_the_routers_channel_when_it_serves_no_xds(router: KitServer) -> None:
    await router.health.set_status(ADS_SERVICE, False, "xDS is off")
    router_channel = open_channel(router.address, interceptors=())
    try:
        async with CapabilityChannels(router_channel, router.address, identity=ME) as channels:
            assert not channels.uses_xds
            assert channels.for_service(SERVICE) is router_channel
            assert channels.target(SERVICE) == router.address
    finally:
        await router_channel.close()
    assert BOOTSTRAP_CONFIG_ENV not in os.environ


@pytest.mark.usefixtures("bootstrap_env")
async def test_xds_turned_off_stays_on_the_router_even_when_it_serves_xds(
    router: KitServer,
) -> None:
    await router.health.set_status(ADS_SERVICE, True)
    async with _channels(router.address, xds=False) as channels:
        assert not channels.uses_xds
        assert not await channels.wait_for_xds(0.2)
    assert BOOTSTRAP_CONFIG_ENV not in os.environ


@pytest.mark.usefixtures("bootstrap_env")
async def test_asks_again_with_growing_waits_and_moves_to_xds_once_the_router_serves_it(
    monkeypatch: pytest.MonkeyPatch, router: KitServer
) -> None:
    recorded = RecordedWaits.install(monkeypatch, wanted=6)
    async with _channels(router.address) as channels:
        waits = await recorded.wait_for()
        assert not channels.uses_xds
        await router.health.set_status(ADS_SERVICE, True)
        assert await channels.wait_for_xds(10)
        assert channels.target(SERVICE) == f"xds:///{SERVICE}"
    assert_follows(waits, RECHECK_BACKOFF)


@pytest.mark.usefixtures("bootstrap_env")
async def test_an_unreachable_router_means_the_proxy_and_waits_that_grow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = RecordedWaits.install(monkeypatch, wanted=6)
    address = unreachable_address()
    async with _channels(address) as channels:
        waits = await recorded.wait_for()
        assert not channels.uses_xds
        assert channels.target(SERVICE) == address
    # 0.5, 1, 2, 4, 8, 16: each drawn from the upper half of its step.
    assert_follows(waits, RECHECK_BACKOFF)
    assert waits[-1] >= 8.0
