"""The folder and catalog modules behind a real router (in-process, SQLite event bus):
registration, a download routed through the router with its events stored in the router's
log, and a track.imported event reaching the catalog's durable subscription."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from router.app import RouterApp
from router.bus import BusSettings, create_bus
from router.settings import RouterSection, RouterSettings
from services.catalog.module import SPEC as CATALOG
from services.catalog.settings import CatalogSection, CatalogSettings
from services.folder.module import SPEC as FOLDER
from services.folder.settings import FolderSection, FolderSettings
from services.kit.events.client import RouterPublisher
from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel, wait_for_ready
from services.kit.testing.sample_audio import DEFAULT_SAMPLE_TRACKS, make_sample_library
from soulspot.capabilities.v1 import download_pb2, download_pb2_grpc, search_pb2, search_pb2_grpc
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import track_pb2
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2
from tests.helpers.module_checks import eventually

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import grpc

DOWNLOAD_SERVICE = "soulspot.capabilities.v1.DownloadService"
SEARCH_SERVICE = "soulspot.capabilities.v1.SearchService"


async def _router(state_dir: Path) -> AsyncIterator[RouterApp]:
    bus = create_bus(BusSettings(retention_interval_s=3600.0), state_dir=state_dir)
    await bus.start()
    app = RouterApp(
        RouterSettings(
            router=RouterSection(
                address="127.0.0.1:0", health_poll_interval_s=0.1, health_retry_interval_s=0.05
            )
        ),
        bus=bus,
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop(0)
        await bus.stop()


async def test_download_and_index_through_the_router(tmp_path: Path) -> None:
    source = tmp_path / "source"
    await asyncio.to_thread(make_sample_library, source, DEFAULT_SAMPLE_TRACKS[:3])
    async for router in _router(tmp_path / "router"):
        folder_settings = FolderSettings(
            folder=FolderSection(source_dir=source, downloads_dir=tmp_path / "downloads"),
            state_dir=tmp_path / "folder-state",
            router_address=router.address,
        )
        catalog_settings = CatalogSettings(
            catalog=CatalogSection(scan_on_start=False),
            state_dir=tmp_path / "catalog-state",
            library_root=tmp_path / "library",
            router_address=router.address,
        )
        async with (
            ModuleRuntime(FOLDER, folder_settings, port=0) as folder,
            ModuleRuntime(CATALOG, catalog_settings, port=0) as catalog,
            open_channel(router.address) as channel,
        ):
            # The router reports a capability service SERVING once a healthy module has it.
            await wait_for_ready(router.address, 10, service=DOWNLOAD_SERVICE)
            await wait_for_ready(router.address, 10, service=SEARCH_SERVICE)
            assert folder.registration is not None
            assert folder.registration.connected

            await _download_through_router(channel, tmp_path)
            await _index_through_router(channel, catalog, tmp_path / "library")


async def _download_through_router(channel: grpc.aio.Channel, tmp_path: Path) -> None:
    downloads = download_pb2_grpc.DownloadServiceStub(channel)
    track = references_pb2.TrackReference(title="Harbour Lights", artist="The Paper Lanterns")
    reply = await downloads.DownloadTrack(
        download_pb2.DownloadTrackRequest(track=track, requested_by="test"), timeout=10
    )
    assert reply.state == download_pb2.DOWNLOAD_STATE_COMPLETED
    path = Path(reply.file.path)
    assert path.parent.parent == (tmp_path / "downloads").resolve()
    data = await asyncio.to_thread(path.read_bytes)
    assert reply.file.checksum == hashlib.sha256(data).hexdigest()

    router_stub = event_bus_pb2_grpc.EventBusServiceStub(channel)

    async def stored() -> list[str]:
        answer = await router_stub.ListEvents(
            router_pb2.ListEventsRequest(event_types=["download.*"], oldest_first=True)
        )
        return [e.event_type for e in answer.events if e.subject == reply.download_id]

    async def completed_stored() -> bool:
        return "download.completed" in await stored()

    await eventually(completed_stored, what="download.completed in the router's log")
    types = await stored()
    assert types[0] == "download.started"
    assert types[-1] == "download.completed"


async def _index_through_router(
    channel: grpc.aio.Channel, catalog: ModuleRuntime[CatalogSection], library: Path
) -> None:
    subscriber = catalog._background[0]
    await subscriber.wait_connected(10)
    publisher = RouterPublisher(channel, source_module="library")
    # The catalog indexes only files the library holds.
    imported = library / "Ostara Vale" / "lighthouse.flac"
    imported.parent.mkdir(parents=True)
    imported.write_bytes(b"imported audio")
    await publisher.publish(
        track_pb2.TrackImported(
            track=references_pb2.TrackReference(
                title="Lighthouse Keeper", artist="Ostara Vale", track_id="lk-1"
            ),
            file=references_pb2.FileReference(path=str(imported)),
        )
    )
    search = search_pb2_grpc.SearchServiceStub(channel)

    async def found() -> bool:
        answer = await search.SearchTrack(search_pb2.SearchTrackRequest(query="lighthouse"))
        return [r.track.track_id for r in answer.results] == ["lk-1"]

    await eventually(found, what="the imported track in the catalog")
