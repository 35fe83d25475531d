"""FolderDownloadServicer: the folder module's DownloadService."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.domain.downloads.registry import DownloadRegistry, DownloadServicerBase

if TYPE_CHECKING:
    import grpc

    from services.folder.downloader import FolderDownloader
    from soulspot.capabilities.v1 import download_pb2

__all__ = ["FolderDownloadServicer"]


class FolderDownloadServicer(DownloadServicerBase):
    """DownloadTrack copies from the source folder; status, cancel and statistics come from
    the shared download registry."""

    def __init__(self, registry: DownloadRegistry, downloader: FolderDownloader) -> None:
        super().__init__(registry)
        self.downloader = downloader

    async def DownloadTrack(
        self,
        request: download_pb2.DownloadTrackRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> download_pb2.DownloadTrackResponse:
        return await self.downloader.download(request)
