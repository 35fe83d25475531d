"""The folder module's servicers: DownloadService (FolderDownloadServicer) and AlbumService
(FolderAlbumServicer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.domain.downloads.registry import DownloadRegistry, DownloadServicerBase
from soulspot.capabilities.v1 import album_pb2_grpc

if TYPE_CHECKING:
    import grpc

    from services.folder.album_copier import FolderAlbumCopier
    from services.folder.downloader import FolderDownloader
    from soulspot.capabilities.v1 import album_pb2, download_pb2

__all__ = ["FolderAlbumServicer", "FolderDownloadServicer"]


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


class FolderAlbumServicer(album_pb2_grpc.AlbumServiceServicer):
    """DownloadAlbum copies a matching sub-folder of the source folder whole."""

    def __init__(self, albums: FolderAlbumCopier) -> None:
        self.albums = albums

    async def DownloadAlbum(
        self,
        request: album_pb2.DownloadAlbumRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> album_pb2.DownloadAlbumResponse:
        return await self.albums.start(request)
