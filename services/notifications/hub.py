"""The live notification stream: a bounded backlog plus one bounded queue per watcher.

Publishing never waits for a watcher: a watcher that falls behind loses its oldest unread
notifications (and is told how many in the log), so a stalled dashboard cannot grow the
module's memory or slow the notifications themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from soulspot.capabilities.v1 import notify_pb2

__all__ = ["NotificationHub"]

log = logging.getLogger("soulspot.notifications")

WATCHER_QUEUE = 256


class NotificationHub:
    def __init__(self, backlog_size: int = 100) -> None:
        self._backlog: deque[notify_pb2.Notification] = deque(maxlen=backlog_size)
        self._watchers: set[asyncio.Queue[notify_pb2.Notification | None]] = set()
        self._closed = False
        # Watchers already warned about falling behind: one warning each, not one per drop.
        self._warned: set[int] = set()

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def recent(self, count: int) -> list[notify_pb2.Notification]:
        if count <= 0:
            return []
        return list(self._backlog)[-count:]

    def publish(self, notification: notify_pb2.Notification) -> None:
        self._backlog.append(notification)
        for queue in self._watchers:
            if queue.full():
                queue.get_nowait()  # drop the oldest unread for this slow watcher only
                if id(queue) not in self._warned:
                    self._warned.add(id(queue))
                    log.warning(
                        "a notification watcher is behind: its oldest notifications are dropped",
                        extra={
                            "impact": "the watcher misses notifications",
                            "queue": WATCHER_QUEUE,
                        },
                    )
            queue.put_nowait(notification)

    def close(self) -> None:
        """End every watch stream (module shutdown)."""
        self._closed = True
        for queue in self._watchers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)

    async def watch(self, backlog: int) -> AsyncGenerator[notify_pb2.Notification, None]:
        """The last `backlog` notifications, then every new one until close()."""
        queue: asyncio.Queue[notify_pb2.Notification | None] = asyncio.Queue(WATCHER_QUEUE)
        # Snapshot and registration happen without an await between them, so no
        # notification is missed or sent twice.
        recent = self.recent(backlog)
        if self._closed:
            return
        self._watchers.add(queue)
        try:
            for item in recent:
                yield item
            while True:
                notification = await queue.get()
                if notification is None:
                    return
                yield notification
        finally:
            self._watchers.discard(queue)
            self._warned.discard(id(queue))
