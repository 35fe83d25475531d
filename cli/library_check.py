"""Asking the library whether it already holds a track, before downloading it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cli.router_connection import call
from services.kit.rpc.errors import MeshError
from soulspot.capabilities.v1 import library_pb2

if TYPE_CHECKING:
    from soulspot.capabilities.v1 import library_pb2_grpc
    from soulspot.common.v1 import references_pb2

CHECK_TIMEOUT_S = 15.0


async def in_library(
    library: library_pb2_grpc.LibraryServiceAsyncStub, track: references_pb2.TrackReference
) -> str | None:
    """Where the library already holds the track, or None (also when no library answers:
    then the download goes ahead and the library's duplicate check still applies)."""
    try:
        check = await call(
            library.CheckDownloaded(
                library_pb2.CheckDownloadedRequest(track=track), timeout=CHECK_TIMEOUT_S
            )
        )
    except MeshError:
        return None
    return check.file.path if check.downloaded else None
