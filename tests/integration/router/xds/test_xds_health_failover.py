"""A module turning NOT_SERVING is marked unhealthy in the endpoints the router pushes: proxyless
clients move to the next priority before any call fails, and move back when it serves again."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.helpers.xds_clients import XdsLoad, bootstrap

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from router.app import RouterApp
    from tests.helpers.fake_module import FakeModule

    Make = Callable[..., Awaitable[FakeModule]]


async def test_not_serving_moves_traffic_before_any_call_fails(
    xds_router: RouterApp, xds_module: Make
) -> None:
    primary = await xds_module("primary", 10)
    await xds_module("backup", 5)
    load = await XdsLoad(bootstrap(xds_router.address), 16, "--timeout=5").start()
    try:
        await load.wait_for(lambda s: s.served_by("primary") >= 50)
        assert primary.server is not None
        # Still answering every call it gets: only its health says it should get none.
        await primary.server.set_status("", False)
        await load.wait_for(lambda s: s.served_by("backup") >= 20)
        calls_then = primary.calls
        later = load.served_by("backup") + 200
        await load.wait_for(lambda s: s.served_by("backup") >= later)
        assert primary.calls == calls_then
        await primary.server.set_status("", True)
        before = load.served_by("primary")
        await load.wait_for(lambda s: s.served_by("primary") >= before + 50)
        totals = await load.stop()
    finally:
        await load.close()
    assert totals["failed"] == {}, totals
