"""The LibraryService gRPC servicer: import.track, library.check_downloaded, library.statistics,
library.playlist."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.kit.events.background_publish import Outbox
from soulspot.capabilities.v1 import library_pb2, library_pb2_grpc
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import track_pb2

if TYPE_CHECKING:
    import grpc

    from services.kit.module.runtime import Publisher
    from services.library.importer import Importer
    from services.library.playlists import PlaylistWriter


class LibraryServicer(library_pb2_grpc.LibraryServiceServicer):
    def __init__(self, importer: Importer, publisher: Publisher, playlists: PlaylistWriter) -> None:
        self._importer = importer
        self._playlists = playlists
        self.outbox = Outbox(publisher)

    async def ImportTrack(
        self,
        request: library_pb2.ImportTrackRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> library_pb2.ImportTrackResponse:
        result = await self._importer.import_track(request.track, request.file, copy=request.copy)
        # A duplicate is announced too: the pipeline's consumers learn where the track lives.
        await self.outbox.publish(
            track_pb2.TrackImported(
                track=result.track if result.track.title else request.track,
                file=result.file,
                duplicate=result.duplicate,
                duplicate_of=result.file.path if result.duplicate else "",
            ),
            subject=result.file.path,
        )
        return library_pb2.ImportTrackResponse(
            track=result.track if result.track.title else request.track,
            file=result.file,
            duplicate=result.duplicate,
            duplicate_match=result.duplicate_match,
        )

    async def CheckDownloaded(
        self,
        request: library_pb2.CheckDownloadedRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> library_pb2.CheckDownloadedResponse:
        result = await self._importer.check(request.track)
        return library_pb2.CheckDownloadedResponse(
            downloaded=result.downloaded, file=result.file, match=result.match
        )

    async def GetLibraryStatistics(
        self,
        request: library_pb2.GetLibraryStatisticsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> library_pb2.GetLibraryStatisticsResponse:
        stats = await self._importer.statistics()
        return library_pb2.GetLibraryStatisticsResponse(
            tracks=stats.tracks,
            artists=stats.artists,
            albums=stats.albums,
            total_bytes=stats.total_bytes,
            duplicates_refused=stats.duplicates_refused,
            by_quality=stats.by_quality,
        )

    async def WritePlaylist(
        self,
        request: library_pb2.WritePlaylistRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> library_pb2.WritePlaylistResponse:
        written = await self._playlists.write(request.name, list(request.tracks))
        return library_pb2.WritePlaylistResponse(
            file=references_pb2.FileReference(
                path=str(written.path), size_bytes=written.path.stat().st_size
            ),
            written=written.written,
            missing_positions=written.missing_positions,
        )
