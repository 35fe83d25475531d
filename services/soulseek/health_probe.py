"""SlskdHealthProbe: keeps the soulseek module's health in step with slskd."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from services.kit.module.periodic import Periodic

if TYPE_CHECKING:
    from services.kit.module.runtime import ModuleRuntime
    from services.soulseek.settings import SoulseekSection
    from services.soulseek.slskd_api import SlskdClient

__all__ = ["NOT_CONFIGURED", "PROBE_TIMEOUT_S", "SlskdHealthProbe"]

PROBE_TIMEOUT_S = 5.0
NOT_CONFIGURED = (
    "slskd is not configured: set SOULSPOT_SOULSEEK__URL and SOULSPOT_SOULSEEK__API_KEY"
)


class SlskdHealthProbe:
    """Keeps the module's health in step with slskd: reachable, key accepted, logged in."""

    def __init__(
        self,
        runtime: ModuleRuntime[SoulseekSection],
        client: SlskdClient | None,
        interval_s: float,
    ) -> None:
        self.runtime = runtime
        self.client = client
        self._periodic = Periodic("slskd health probe", interval_s, self.check)

    async def check(self) -> bool:
        if self.client is None:
            await self.runtime.set_health(False, NOT_CONFIGURED)
            return False
        try:
            # A black-holed address would otherwise hold the probe for the client's timeout.
            health = await asyncio.wait_for(self.client.health(), PROBE_TIMEOUT_S)
        except TimeoutError:
            reason = f"slskd at {self.client.base_url} did not answer within {PROBE_TIMEOUT_S:g}s"
            await self.runtime.set_health(False, reason)
            return False
        await self.runtime.set_health(health.usable, health.reason)
        return health.usable

    async def start(self) -> None:
        await self.check()
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
