"""The folder module: download.track and download.album (priority 5) by copying a matching
file, or a whole album sub-folder, from a source folder (an existing downloads folder, a NAS
share) into the downloads folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.domain.downloads.registry import DownloadRegistry
from services.domain.downloads.store import FILE_NAME
from services.folder.album_copier import FolderAlbumCopier
from services.folder.downloader import FolderDownloader
from services.folder.servicer import FolderAlbumServicer, FolderDownloadServicer
from services.folder.settings import DEFAULT_PORT, FolderSection, FolderSettings
from services.kit.module.spec import Capability, ModuleParts, ModuleSpec, ServiceBinding
from soulspot.capabilities.v1 import album_pb2, album_pb2_grpc, download_pb2, download_pb2_grpc

if TYPE_CHECKING:
    from services.kit.module.runtime import ModuleRuntime

__all__ = ["SPEC", "build"]


def build(runtime: ModuleRuntime[FolderSection]) -> ModuleParts:
    section = runtime.section
    registry = DownloadRegistry(
        runtime.publisher,
        module=runtime.name,
        db_path=runtime.settings.state_dir / runtime.name / FILE_NAME,
    )
    downloader = FolderDownloader(runtime, section, registry)
    albums = FolderAlbumCopier(downloader)

    async def stop() -> None:
        await albums.stop()
        await downloader.stop()

    runtime.extras["registry"] = registry
    runtime.extras["downloader"] = downloader
    return ModuleParts(
        services=[
            ServiceBinding.of(
                download_pb2.DESCRIPTOR.services_by_name["DownloadService"],
                FolderDownloadServicer(registry, downloader),
                download_pb2_grpc.add_DownloadServiceServicer_to_server,
            ),
            ServiceBinding.of(
                album_pb2.DESCRIPTOR.services_by_name["AlbumService"],
                FolderAlbumServicer(albums),
                album_pb2_grpc.add_AlbumServiceServicer_to_server,
            ),
        ],
        start=downloader.start,
        stop=stop,
    )


SPEC = ModuleSpec(
    name="folder",
    default_port=DEFAULT_PORT,
    capabilities=[
        Capability("download.track", 5),
        Capability("download.status", 5),
        Capability("download.cancel", 5),
        Capability("download.statistics", 5),
        Capability("download.album", 5),
    ],
    factory=build,
    section_cls=FolderSection,
    settings_cls=FolderSettings,
)
