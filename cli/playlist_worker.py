"""The playlist work queue's worker: takes playlist.track_requested jobs one at a time,
brings each track into the library and publishes playlist.track_handled.

Jobs come from the durable consumer "playlist-sync"; every worker (tasks of
`soulspot sync-playlist`, or `soulspot worker` processes elsewhere) competes for them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from cli.download_watch import DownloadWatch, Outcome
from cli.identity import CLIENT, instance_name
from services.kit.clients.downloads import in_library, request_download
from services.kit.events.client import EventHandlers, RouterPublisher, Subscriber
from services.kit.rpc.errors import MeshError
from soulspot.capabilities.v1 import download_pb2_grpc, library_pb2_grpc
from soulspot.events.v1 import playlist_pb2 as playlist_events_pb2

if TYPE_CHECKING:
    import grpc

    from soulspot.common.v1 import references_pb2
    from soulspot.events.v1 import envelope_pb2

WORK_QUEUE = "playlist-sync"


class PlaylistWorker:
    """Takes playlist.track_requested jobs from the shared queue, one at a time."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        consumer: str = WORK_QUEUE,
        name: str = "",
        track_timeout_s: float = 300.0,
    ) -> None:
        self.name = name or instance_name()
        self._channel = channel
        self._track_timeout_s = track_timeout_s
        self._library = library_pb2_grpc.LibraryServiceStub(channel)
        self._downloads = download_pb2_grpc.DownloadServiceStub(channel)
        self._publisher = RouterPublisher(channel, source_module=CLIENT)
        self._watch = DownloadWatch(channel, "worker")
        handlers = EventHandlers()
        handlers.add("playlist.track_requested", self._on_job)
        self.handled = 0
        self.subscriber = Subscriber(
            channel,
            consumer=consumer,
            handlers=handlers,
            # One job at a time per worker: competing workers share the queue fairly.
            max_in_flight=1,
            ack_timeout_s=track_timeout_s + 60.0,
            instance=self.name,
        )

    async def start(self) -> None:
        await self._watch.start()
        await self.subscriber.start()
        await self.subscriber.wait_connected()

    async def stop(self) -> None:
        await self.subscriber.stop()
        await self._watch.stop()

    async def _on_job(
        self,
        job: playlist_events_pb2.PlaylistTrackRequested,
        envelope: envelope_pb2.EventEnvelope,
    ) -> None:
        outcome = await self.handle(job.track, job.quality)
        # An error publishing propagates: the job is nacked and handled again.
        await self._publisher.publish(
            playlist_events_pb2.PlaylistTrackHandled(
                sync_id=job.sync_id,
                track=job.track,
                position=job.position,
                outcome=outcome.outcome,
                detail=outcome.detail,
                worker=self.name,
            ),
            subject=job.sync_id,
        )
        self.handled += 1

    async def handle(
        self,
        track: references_pb2.TrackReference,
        quality: references_pb2.QualityPolicy | None = None,
    ) -> Outcome:
        existing = await in_library(self._library, track)
        if existing is not None:
            return Outcome("already_in_library", existing)
        try:
            started = await request_download(
                self._downloads, track, requested_by=CLIENT, quality=quality
            )
        except MeshError as err:
            return Outcome("failed", f"{err.code.name}: {err.message}")
        try:
            async with asyncio.timeout(self._track_timeout_s):
                return await self._watch.outcome(started.download_id)
        except TimeoutError:
            return Outcome("failed", f"no outcome within {self._track_timeout_s:.0f}s")
