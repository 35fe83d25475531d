"""Following downloads to their outcome: one subscription to the downloader's and the
pipeline's events, sorted by download id.

A download is done when the post-download pipeline has filed it in the library
(track.ready, with the library path) or when it failed (download.failed,
pipeline.run_failed). download.completed is not the end: it names the file in the downloads
folder, before enrichment and import.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cli.identity import instance_name
from services.kit.events.client import EventHandlers, Subscriber
from soulspot.events.v1 import download_pb2 as download_events_pb2
from soulspot.events.v1 import pipeline_pb2 as pipeline_events_pb2
from soulspot.events.v1 import playlist_pb2 as playlist_events_pb2
from soulspot.events.v1 import track_pb2 as track_events_pb2
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from collections.abc import Callable

    import grpc

    from soulspot.events.v1 import envelope_pb2

# The events that end (or report on) one download, from the downloader and the pipeline.
OUTCOME_EVENTS = ("download.*", "track.ready", "pipeline.run_failed")

# Subscribers find a payload's class in the default descriptor pool: the event contracts the
# CLI handles must be loaded, whether or not the code names their classes.
EVENT_CONTRACTS = (download_events_pb2, pipeline_events_pb2, playlist_events_pb2, track_events_pb2)

# A command's own consumers (a fresh name each run) go once it has been gone this long: long
# enough to ride out a router restart, short enough that status does not fill with them.
WATCHER_IDLE_S = 600.0


def watcher_subscriber(
    channel: grpc.aio.Channel, consumer: str, handlers: EventHandlers
) -> Subscriber:
    """A subscriber for this run of a command alone: `consumer` is a fresh name, it takes only
    events stored from now on, and the router removes it once the command is gone."""
    return Subscriber(
        channel,
        consumer=consumer,
        handlers=handlers,
        start=router_pb2.START_POSITION_NEW,
        instance=instance_name(),
        inactive_threshold_s=WATCHER_IDLE_S,
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    outcome: str  # "downloaded", "already_in_library" or "failed"
    detail: str  # the library path, or why it failed


class DownloadWatch:
    """One subscription to download/pipeline events, sorted by download_id.

    Events can arrive before the caller knows the download id (a local source finishes before
    DownloadTrack answers), so recent events of unclaimed downloads are kept, up to a bound.
    """

    KEEP_UNCLAIMED = 1000

    def __init__(self, channel: grpc.aio.Channel, name: str) -> None:
        handlers = EventHandlers()
        for pattern in OUTCOME_EVENTS:
            handlers.add(pattern, self.on_event)
        self.subscriber = watcher_subscriber(
            channel, f"cli-{name}-{uuid.uuid4().hex[:12]}", handlers
        )
        self._queues: dict[str, asyncio.Queue[tuple[str, Any]]] = {}
        self._unclaimed: OrderedDict[str, list[tuple[str, Any]]] = OrderedDict()

    async def start(self) -> None:
        await self.subscriber.start()
        await self.subscriber.wait_connected()

    async def stop(self) -> None:
        await self.subscriber.stop()

    async def on_event(self, payload: Any, envelope: envelope_pb2.EventEnvelope) -> None:
        """The subscription's handler: hand the event to its download's waiter, or keep it."""
        download_id = getattr(payload, "download_id", "")
        if not download_id:
            return
        item = (envelope.event_type, payload)
        queue = self._queues.get(download_id)
        if queue is not None:
            queue.put_nowait(item)
            return
        self._unclaimed.setdefault(download_id, []).append(item)
        self._unclaimed.move_to_end(download_id)
        while len(self._unclaimed) > self.KEEP_UNCLAIMED:
            self._unclaimed.popitem(last=False)

    def claim(self, download_id: str) -> asyncio.Queue[tuple[str, Any]]:
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        for item in self._unclaimed.pop(download_id, []):
            queue.put_nowait(item)
        self._queues[download_id] = queue
        return queue

    def release(self, download_id: str) -> None:
        self._queues.pop(download_id, None)

    async def outcome(
        self,
        download_id: str,
        *,
        on_progress: Callable[[float, str], None] | None = None,
    ) -> Outcome:
        """Until the download ends in the library (track.ready) or fails."""
        queue = self.claim(download_id)
        try:
            while True:
                event_type, payload = await queue.get()
                if event_type == "download.progress" and on_progress is not None:
                    on_progress(float(payload.percent), payload.state or "downloading")
                elif event_type == "download.started" and on_progress is not None:
                    on_progress(0.0, f"from {payload.source}" if payload.source else "started")
                elif event_type == "download.completed" and on_progress is not None:
                    # In the downloads folder; the pipeline has yet to file it in the library.
                    on_progress(100.0, "downloaded, importing")
                elif event_type == "download.failed":
                    return Outcome("failed", f"download failed: {payload.reason}")
                elif event_type == "pipeline.run_failed":
                    return Outcome("failed", f"{payload.capability} failed: {payload.reason}")
                elif event_type == "track.ready":
                    return Outcome("downloaded", payload.file.path)
        finally:
            self.release(download_id)
