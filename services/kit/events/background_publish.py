"""Publishing an event without holding the call hostage to the router.

The runtime's publisher retries until the router answers, which is right for not losing the
event but wrong for the caller of a capability: with no router (standalone) the file work is
done and the answer must not wait. So the publish runs as its own task; the call waits for it
only briefly (long enough for a healthy router) and the task carries on in the background,
where the runtime's shutdown waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from services.kit.module.runtime import Publisher

__all__ = ["Outbox"]

log = logging.getLogger(__name__)

INLINE_WAIT_S = 2.0


class Outbox:
    def __init__(self, publisher: Publisher, *, inline_wait_s: float = INLINE_WAIT_S) -> None:
        self._publisher = publisher
        self._inline_wait_s = inline_wait_s
        self._tasks: set[asyncio.Task[object]] = set()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def publish(self, payload: Message, *, subject: str = "") -> None:
        task: asyncio.Task[object] = asyncio.create_task(
            self._publisher.publish(payload, subject=subject)
        )
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        await asyncio.wait({task}, timeout=self._inline_wait_s)

    def _finished(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error(
                "event not published",
                extra={"error": str(error), "impact": "subscribers miss this event"},
            )

    async def close(self) -> None:
        """Cancel what is still waiting for a router (the runtime already gave it its grace)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
