"""A module given several router addresses registers with each: every router lists it and
watches its health, while an address where no router answers is retried alone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from soulspot.common.v1 import module_pb2
from tests.helpers.fake_module import FakeModule
from tests.helpers.recorded_waits import unreachable_address
from tests.helpers.router import eventually, router_app

if TYPE_CHECKING:
    from router.app import RouterApp

ACTIVE = module_pb2.MODULE_STATUS_ACTIVE
INACTIVE = module_pb2.MODULE_STATUS_INACTIVE


def _status(router: RouterApp, name: str) -> tuple[int, str] | None:
    entry = router.registry.get(name)
    return (entry.status, entry.reason) if entry is not None else None


async def test_every_router_lists_the_module_and_follows_its_health() -> None:
    routers = [router_app(), router_app()]
    for router in routers:
        await router.start()
    fake = FakeModule("multi", 1)
    await fake.start()
    away = unreachable_address()
    try:
        await fake.register(",".join([routers[0].address, away, routers[1].address]))
        assert fake.registration is not None
        await eventually(lambda: all(_status(r, "multi") is not None for r in routers))
        await eventually(lambda: [_status(r, "multi")[0] for r in routers] == [ACTIVE, ACTIVE])  # type: ignore[index]
        both = [routers[0].address, routers[1].address]
        await eventually(lambda: fake.registration.connected_routers == both)  # type: ignore[union-attr]

        # Each router watches the module's health service itself.
        assert fake.server is not None
        await fake.server.set_status("", False, "upstream down")
        await eventually(
            lambda: all(
                (s := _status(r, "multi")) is not None
                and s[0] == INACTIVE
                and "NOT_SERVING" in s[1]
                for r in routers
            )
        )
        # One router going away leaves the module registered with the other.
        await routers[0].stop()
        await eventually(lambda: fake.registration.connected_routers == [routers[1].address])  # type: ignore[union-attr]
        assert fake.registration.connected
    finally:
        await fake.stop()
        for router in routers:
            await router.stop()
