"""Plain generated stubs on `xds:///` channels reach modules straight from the router's xDS:
the highest priority answers, a named-module call reaches its module, an unknown service is
refused."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.helpers.xds_clients import bootstrap, xds_calls

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from router.app import RouterApp
    from tests.helpers.fake_module import FakeModule

    Make = Callable[..., Awaitable[FakeModule]]


async def test_calls_reach_the_highest_priority_module_directly(
    xds_router: RouterApp, xds_module: Make
) -> None:
    primary = await xds_module("primary", 10)
    backup = await xds_module("backup", 5)
    result = await xds_calls(bootstrap(xds_router.address), "--calls=20")
    assert result["ok"] == 20, result
    assert result["by"] == {"primary": 20}
    # Straight to the module: the router's proxy saw none of these calls.
    assert primary.calls == 20
    assert backup.calls == 0
    assert "x-soulspot-module" not in primary.last_metadata


async def test_a_named_module_call_reaches_that_module(
    xds_router: RouterApp, xds_module: Make
) -> None:
    await xds_module("primary", 10)
    await xds_module("backup", 5)
    result = await xds_calls(bootstrap(xds_router.address), "--calls=5", "--target-module=backup")
    assert result["by"] == {"backup": 5}, result


async def test_a_named_module_that_does_not_serve_the_call_fails_it(
    xds_router: RouterApp, xds_module: Make
) -> None:
    await xds_module("primary", 10)
    result = await xds_calls(
        bootstrap(xds_router.address), "--calls=1", "--target-module=nobody", "--timeout=5"
    )
    assert result["ok"] == 0
    assert result["failed"] == {"UNAVAILABLE": 1}, result


async def test_an_unknown_service_is_refused(xds_router: RouterApp, xds_module: Make) -> None:
    await xds_module("primary", 10)
    result = await xds_calls(
        bootstrap(xds_router.address),
        "--calls=1",
        "--timeout=25",
        "--target=xds:///soulspot.capabilities.v1.NoSuchService",
    )
    assert result["ok"] == 0
    assert result["failed"] == {"UNAVAILABLE": 1}, result
