"""A module that cannot serve tells the router why: the reason it sets on its health reaches
the router's status (grpc.health itself carries no reason)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.app import RouterApp
from router.settings import RouterSection, RouterSettings
from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel
from services.spotify.module import SPEC as SPOTIFY
from services.spotify.settings import SpotifySettings
from soulspot.common.v1 import module_pb2
from soulspot.router.v1 import router_pb2, status_pb2_grpc
from tests.helpers.module_checks import eventually

if TYPE_CHECKING:
    from pathlib import Path


async def _spotify_status(stub: status_pb2_grpc.StatusServiceAsyncStub) -> router_pb2.ModuleInfo:
    status = await stub.GetStatus(router_pb2.GetStatusRequest(), timeout=5)
    # Not registered yet reads as an empty entry.
    return next((m for m in status.modules if m.name == "spotify"), router_pb2.ModuleInfo())


async def test_not_serving_reason_is_shown_by_the_router(tmp_path: Path) -> None:
    router = RouterApp(
        RouterSettings(
            router=RouterSection(
                address="127.0.0.1:0", health_poll_interval_s=0.1, health_retry_interval_s=0.05
            )
        )
    )
    await router.start()
    try:
        # No credentials: the module serves health, NOT_SERVING with its reason.
        settings = SpotifySettings(state_dir=tmp_path, router_address=router.address)
        async with (
            ModuleRuntime(SPOTIFY, settings, port=0) as spotify,
            open_channel(router.address) as channel,
        ):
            stub = status_pb2_grpc.StatusServiceStub(channel)
            assert not spotify.serving

            async def explained() -> bool:
                info = await _spotify_status(stub)
                return "SOULSPOT_SPOTIFY__CLIENT_ID" in info.reason

            await eventually(explained, what="the reason at the router")
            info = await _spotify_status(stub)
            assert info.status == module_pb2.MODULE_STATUS_INACTIVE
            assert info.reason.startswith("health reports NOT_SERVING: ")

            # Once the module can serve, the router drops the stale explanation.
            await spotify.set_health(True)

            async def active() -> bool:
                info = await _spotify_status(stub)
                return info.status == module_pb2.MODULE_STATUS_ACTIVE

            await eventually(active, what="spotify active")
            assert "CLIENT_ID" not in (await _spotify_status(stub)).reason
    finally:
        await router.stop(0)
