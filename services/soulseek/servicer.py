"""The soulseek module's servicers: DownloadService (SoulseekDownloadServicer) and
AlbumService (SoulseekAlbumServicer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.domain.downloads.registry import DownloadRegistry, DownloadServicerBase
from services.kit.rpc.errors import Unavailable
from services.soulseek.health_probe import NOT_CONFIGURED
from soulspot.capabilities.v1 import album_pb2_grpc

if TYPE_CHECKING:
    import grpc

    from services.soulseek.album_downloader import SoulseekAlbumDownloader
    from services.soulseek.downloader import SoulseekDownloader
    from services.soulseek.health_probe import SlskdHealthProbe
    from soulspot.capabilities.v1 import album_pb2, download_pb2

__all__ = ["SoulseekAlbumServicer", "SoulseekDownloadServicer"]


class SoulseekDownloadServicer(DownloadServicerBase):
    """DownloadTrack through slskd; status, cancel and statistics come from the shared
    download registry."""

    def __init__(
        self,
        registry: DownloadRegistry,
        downloader: SoulseekDownloader | None,
        probe: SlskdHealthProbe,
    ) -> None:
        super().__init__(registry)
        self.downloader = downloader
        self.probe = probe

    async def DownloadTrack(
        self,
        request: download_pb2.DownloadTrackRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> download_pb2.DownloadTrackResponse:
        # A stale "down" must not refuse work once slskd is back: probe again first.
        if not self.probe.runtime.serving and not await self.probe.check():
            raise Unavailable(f"soulseek cannot download: {self.probe.runtime.health_reason}")
        if self.downloader is None:
            raise Unavailable(NOT_CONFIGURED)
        return await self.downloader.start(request)


class SoulseekAlbumServicer(album_pb2_grpc.AlbumServiceServicer):
    """DownloadAlbum through slskd: the whole album folder from one peer."""

    def __init__(self, albums: SoulseekAlbumDownloader | None, probe: SlskdHealthProbe) -> None:
        self.albums = albums
        self.probe = probe

    async def DownloadAlbum(
        self,
        request: album_pb2.DownloadAlbumRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> album_pb2.DownloadAlbumResponse:
        if not self.probe.runtime.serving and not await self.probe.check():
            raise Unavailable(f"soulseek cannot download: {self.probe.runtime.health_reason}")
        if self.albums is None:
            raise Unavailable(NOT_CONFIGURED)
        return await self.albums.start(request)
