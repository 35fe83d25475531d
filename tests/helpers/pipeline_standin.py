"""The pipeline engine's counterpart in its unit tests: one gRPC server that answers what the
engine calls on the router (EventBusService.Publish, recorded) and the step capabilities
(metadata, library, notifications), with health per capability service. The real router and
modules run the pipeline in tests/e2e/flow; this isolates the engine's own logic.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc

from router.pipeline import Pipeline, load_pipeline_config
from services.kit.rpc.server import KitServer
from soulspot.capabilities.v1 import (
    library_pb2,
    library_pb2_grpc,
    metadata_pb2,
    metadata_pb2_grpc,
    notify_pb2,
    notify_pb2_grpc,
)
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2, envelope_pb2
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2

if TYPE_CHECKING:
    from pathlib import Path

METADATA = "soulspot.capabilities.v1.MetadataService"
PIPELINE_RUN_SERVICE = "soulspot.router.v1.PipelineRunService"


class FakeBus(event_bus_pb2_grpc.EventBusServiceServicer):
    def __init__(self) -> None:
        self.events: dict[str, envelope_pb2.EventEnvelope] = {}

    async def Publish(
        self, request: router_pb2.PublishRequest, context: Any
    ) -> router_pb2.PublishResponse:
        duplicate = request.event.event_id in self.events
        self.events.setdefault(request.event.event_id, request.event)
        return router_pb2.PublishResponse(sequence=len(self.events), duplicate=duplicate)

    def of_type(self, event_type: str) -> list[envelope_pb2.EventEnvelope]:
        return [e for e in self.events.values() if e.event_type == event_type]


class Metadata(metadata_pb2_grpc.MetadataServiceServicer):
    def __init__(self) -> None:
        self.up = True
        self.calls: list[metadata_pb2.EnrichMetadataRequest] = []

    async def EnrichMetadata(
        self, request: metadata_pb2.EnrichMetadataRequest, context: Any
    ) -> metadata_pb2.EnrichMetadataResponse:
        if not self.up:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no healthy module for enrich")
        self.calls.append(request)
        track = references_pb2.TrackReference()
        track.CopyFrom(request.track)
        track.album = "Enriched Album"
        file = references_pb2.FileReference()
        file.CopyFrom(request.file)
        file.checksum = "sum-" + request.file.path
        return metadata_pb2.EnrichMetadataResponse(track=track, file=file)


class Library(library_pb2_grpc.LibraryServiceServicer):
    def __init__(self) -> None:
        self.imports: list[library_pb2.ImportTrackRequest] = []
        self.hang = False
        self.broken = False

    async def ImportTrack(
        self, request: library_pb2.ImportTrackRequest, context: Any
    ) -> library_pb2.ImportTrackResponse:
        if self.broken:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "library not writable")
        self.imports.append(request)
        if self.hang:
            await asyncio.sleep(3600)
        file = references_pb2.FileReference(path="/library/" + request.track.title + ".flac")
        return library_pb2.ImportTrackResponse(track=request.track, file=file)

    async def CheckDownloaded(
        self, request: library_pb2.CheckDownloadedRequest, context: Any
    ) -> library_pb2.CheckDownloadedResponse:
        for done in self.imports:
            if done.track.title == request.track.title:
                file = references_pb2.FileReference(path="/library/" + done.track.title + ".flac")
                return library_pb2.CheckDownloadedResponse(downloaded=True, file=file)
        return library_pb2.CheckDownloadedResponse(downloaded=False)


class Notify(notify_pb2_grpc.NotificationServiceServicer):
    def __init__(self) -> None:
        self.calls: list[notify_pb2.NotifyTrackReadyRequest] = []

    async def NotifyTrackReady(
        self, request: notify_pb2.NotifyTrackReadyRequest, context: Any
    ) -> notify_pb2.NotifyTrackReadyResponse:
        self.calls.append(request)
        return notify_pb2.NotifyTrackReadyResponse()


class Mesh:
    """One KitServer playing the router's public face for the pipeline engine: the bus's
    Publish (recorded), the three step capabilities, and health per capability service."""

    def __init__(self) -> None:
        self.router = FakeBus()  # type: ignore[abstract]  # only what the engine calls
        self.metadata = Metadata()  # type: ignore[abstract]
        self.library = Library()  # type: ignore[abstract]
        self.notify = Notify()  # type: ignore[abstract]
        self.server = KitServer("fake-router", grace_s=0.1)
        self.server.add_service(
            lambda s: event_bus_pb2_grpc.add_EventBusServiceServicer_to_server(self.router, s),
            "soulspot.router.v1.EventBusService",
        )
        self.server.add_service(
            lambda s: metadata_pb2_grpc.add_MetadataServiceServicer_to_server(self.metadata, s),
            METADATA,
        )
        self.server.add_service(
            lambda s: library_pb2_grpc.add_LibraryServiceServicer_to_server(self.library, s),
            "soulspot.capabilities.v1.LibraryService",
        )
        self.server.add_service(
            lambda s: notify_pb2_grpc.add_NotificationServiceServicer_to_server(self.notify, s),
            "soulspot.capabilities.v1.NotificationService",
        )

    async def metadata_up(self, up: bool) -> None:
        self.metadata.up = up
        await self.server.set_status(METADATA, up, None if up else "metadata stopped")


def pipeline_for(mesh: Mesh, state: Path, **overrides: Any) -> Pipeline:
    config = load_pipeline_config().model_copy(
        update={"startup_grace_s": 0.0, "deferred_sweep_s": 0.2, **overrides}
    )
    return Pipeline(mesh.server.address, state, config=config, subscribe=False)


def completed_event(
    title: str = "Harbour Lights", event_id: str = "ev-1"
) -> tuple[download_pb2.DownloadCompleted, envelope_pb2.EventEnvelope]:
    payload = download_pb2.DownloadCompleted(
        download_id="dl-" + title,
        track=references_pb2.TrackReference(title=title, artist="The Paper Lanterns"),
        file=references_pb2.FileReference(path="/downloads/" + title + ".flac"),
        source="folder",
        requested_by="cli",
    )
    envelope = envelope_pb2.EventEnvelope(
        event_id=event_id,
        event_type="download.completed",
        schema_version="1.0.0",
        source_module="folder",
        correlation_id="corr-" + title,
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )
    envelope.payload.Pack(payload)
    return payload, envelope


async def until(predicate: Any, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (polling state another task changes)
            await asyncio.sleep(0.02)
