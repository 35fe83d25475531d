"""SoulseekDownloadServicer: the soulseek module's DownloadService."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.domain.downloads.registry import DownloadRegistry, DownloadServicerBase
from services.kit.rpc.errors import Unavailable
from services.soulseek.health_probe import NOT_CONFIGURED

if TYPE_CHECKING:
    import grpc

    from services.soulseek.downloader import SoulseekDownloader
    from services.soulseek.health_probe import SlskdHealthProbe
    from soulspot.capabilities.v1 import download_pb2

__all__ = ["SoulseekDownloadServicer"]


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
