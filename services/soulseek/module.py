"""The soulseek module: download.track and download.album (priority 10) and friends through
slskd."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.domain.downloads.album_tracks import fail_interrupted_albums
from services.domain.downloads.registry import DownloadRegistry
from services.domain.downloads.store import FILE_NAME
from services.kit.module.spec import Capability, ModuleParts, ModuleSpec, ServiceBinding
from services.soulseek.album_downloader import SoulseekAlbumDownloader
from services.soulseek.candidate_store import CandidateStore
from services.soulseek.downloader import SoulseekDownloader
from services.soulseek.health_probe import NOT_CONFIGURED, SlskdHealthProbe
from services.soulseek.servicer import SoulseekAlbumServicer, SoulseekDownloadServicer
from services.soulseek.settings import DEFAULT_PORT, SoulseekSection, SoulseekSettings
from services.soulseek.slskd_api import SlskdClient
from soulspot.capabilities.v1 import album_pb2, album_pb2_grpc, download_pb2, download_pb2_grpc
from soulspot.events.v1 import download_pb2 as download_events_pb2

if TYPE_CHECKING:
    from services.kit.module.runtime import ModuleRuntime

__all__ = ["SPEC", "build"]

FailureKind = download_events_pb2.FailureKind


def build(runtime: ModuleRuntime[SoulseekSection]) -> ModuleParts:
    section = runtime.section
    client = SlskdClient(section.url, section.api_key) if section.url else None
    db_path = runtime.settings.state_dir / runtime.name / FILE_NAME
    registry = DownloadRegistry(
        runtime.publisher,
        module=runtime.name,
        progress_interval_s=section.progress_interval_s,
        db_path=db_path,
    )
    # The candidates of a download are kept beside its record, in the same file.
    plans = CandidateStore(db_path) if client is not None else None
    downloader = (
        SoulseekDownloader(client, section, registry, plans) if client is not None else None
    )
    albums = SoulseekAlbumDownloader(downloader) if downloader is not None else None
    probe = SlskdHealthProbe(runtime, client, section.probe_interval_s)
    servicer = SoulseekDownloadServicer(registry, downloader, probe)

    async def start() -> None:
        await probe.start()
        # An album's unfinished tracks are given up with their album; single tracks resume.
        interrupted = await fail_interrupted_albums(registry, await registry.recover())
        if downloader is not None:
            await downloader.resume(interrupted)
            return
        for record in interrupted:
            await registry.fail(
                record,
                f"interrupted by a restart, and soulseek cannot follow it: {NOT_CONFIGURED}",
                kind=FailureKind.FAILURE_KIND_BACKEND_UNAVAILABLE,
                can_retry=True,
            )

    async def stop() -> None:
        await probe.stop()
        if albums is not None:
            await albums.stop()
        await registry.shutdown()
        if plans is not None:
            # After the shutdown: the download tasks it ends still write to it.
            plans.close()
        if client is not None:
            await client.aclose()

    runtime.extras["registry"] = registry
    return ModuleParts(
        services=[
            ServiceBinding.of(
                download_pb2.DESCRIPTOR.services_by_name["DownloadService"],
                servicer,
                download_pb2_grpc.add_DownloadServiceServicer_to_server,
            ),
            ServiceBinding.of(
                album_pb2.DESCRIPTOR.services_by_name["AlbumService"],
                SoulseekAlbumServicer(albums, probe),
                album_pb2_grpc.add_AlbumServiceServicer_to_server,
            ),
        ],
        start=start,
        stop=stop,
    )


SPEC = ModuleSpec(
    name="soulseek",
    default_port=DEFAULT_PORT,
    capabilities=[
        Capability("download.track", 10),
        Capability("download.status", 10),
        Capability("download.cancel", 10),
        Capability("download.statistics", 10),
        Capability("download.album", 10),
    ],
    factory=build,
    section_cls=SoulseekSection,
    settings_cls=SoulseekSettings,
)
