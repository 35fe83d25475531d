"""The live stream: backlog for late watchers, live delivery, slow watchers, shutdown."""

from __future__ import annotations

import asyncio

from services.notifications.hub import WATCHER_QUEUE, NotificationHub
from soulspot.capabilities.v1 import notify_pb2
from tests.helpers.module_checks import eventually


def note(n: int) -> notify_pb2.Notification:
    return notify_pb2.Notification(notification_id=str(n))


async def test_backlog_then_live_then_close() -> None:
    hub = NotificationHub(backlog_size=3)
    for n in range(5):
        hub.publish(note(n))
    seen: list[str] = []

    async def watch() -> None:
        async for item in hub.watch(backlog=10):
            seen.append(item.notification_id)

    task = asyncio.create_task(watch())
    await eventually(lambda: hub.watchers > 0, what="the watcher to register")
    hub.publish(note(5))
    hub.close()
    await asyncio.wait_for(task, 5)
    assert seen == ["2", "3", "4", "5"]  # the ring buffer kept only the last 3
    assert hub.watchers == 0


async def test_a_slow_watcher_loses_its_oldest_not_the_hub_memory() -> None:
    hub = NotificationHub(backlog_size=1)
    stream = hub.watch(backlog=0)
    first = asyncio.ensure_future(anext(stream))
    await eventually(lambda: hub.watchers > 0, what="the watcher to register")
    for n in range(WATCHER_QUEUE + 10):
        hub.publish(note(n))
    # The queue holds WATCHER_QUEUE items: the 10 oldest were dropped for this watcher only.
    assert (await first).notification_id == "10"
    assert (await anext(stream)).notification_id == "11"
    assert [n.notification_id for n in hub.recent(5)] == [str(WATCHER_QUEUE + 9)]
    await stream.aclose()
    assert hub.watchers == 0
