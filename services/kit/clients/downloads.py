"""Bringing one track in: ask the library whether it already holds it, else request its
download (download.track). The download's outcome arrives later as events."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from services.kit.rpc.errors import from_rpc_error
from soulspot.capabilities.v1 import download_pb2, library_pb2

if TYPE_CHECKING:
    from soulspot.capabilities.v1 import download_pb2_grpc, library_pb2_grpc
    from soulspot.common.v1 import references_pb2

CHECK_TIMEOUT_S = 15.0
DOWNLOAD_REQUEST_TIMEOUT_S = 60.0


async def in_library(
    library: library_pb2_grpc.LibraryServiceAsyncStub, track: references_pb2.TrackReference
) -> str | None:
    """Where the library already holds the track, or None (also when no library answers:
    then the download goes ahead and the library's duplicate check still applies)."""
    try:
        check = await library.CheckDownloaded(
            library_pb2.CheckDownloadedRequest(track=track), timeout=CHECK_TIMEOUT_S
        )
    except grpc.aio.AioRpcError:
        return None
    return check.file.path if check.downloaded else None


async def request_download(
    downloads: download_pb2_grpc.DownloadServiceAsyncStub,
    track: references_pb2.TrackReference,
    *,
    requested_by: str,
    quality: references_pb2.QualityPolicy | None = None,
) -> download_pb2.DownloadTrackResponse:
    """Ask the best download module for the track; raises the kit's MeshError."""
    request = download_pb2.DownloadTrackRequest(track=track, requested_by=requested_by)
    if quality is not None and quality.ByteSize():
        request.quality.CopyFrom(quality)
    try:
        response: download_pb2.DownloadTrackResponse = await downloads.DownloadTrack(
            request, timeout=DOWNLOAD_REQUEST_TIMEOUT_S
        )
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error(err) from err
    return response
