"""A background step repeated at an interval: the health probes of modules whose backend can
come and go (slskd, Spotify, a source folder, the library root)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from services.kit.support.tasks import cancel_and_wait

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger("soulspot.periodic")


class Periodic:
    """Runs `step` every `interval_s` seconds until stopped. A failing step is logged and the
    next one still runs: a probe that crashed once must not leave a module's health frozen."""

    def __init__(
        self,
        name: str,
        interval_s: float,
        step: Callable[[], Awaitable[object]],
        *,
        first_at_once: bool = False,
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self._step = step
        # False when the caller already ran the step itself before start (a synchronous
        # first check), True to run the first step in the background at once.
        self._first_at_once = first_at_once
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        if not self._first_at_once:
            await asyncio.sleep(self.interval_s)
        while True:
            try:
                await self._step()
            except Exception:
                log.exception("%s failed", self.name, extra={"task": self.name})
            await asyncio.sleep(self.interval_s)
