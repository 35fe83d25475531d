"""Reading a playlist's tracks through the playlist.tracks capability."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from services.kit.rpc.errors import from_rpc_error
from soulspot.capabilities.v1 import playlist_pb2, playlist_pb2_grpc

if TYPE_CHECKING:
    from soulspot.common.v1 import references_pb2

PLAYLIST_READ_TIMEOUT_S = 120.0


@dataclass(slots=True)
class Playlist:
    """A playlist as read: its name and its tracks with their positions (from 1)."""

    name: str = ""
    tracks: list[tuple[int, references_pb2.TrackReference]] = field(default_factory=list)
    # Entries beyond `max_tracks` that were not read.
    truncated: bool = False


async def read_playlist(
    channel: grpc.aio.Channel,
    playlist_id: str,
    *,
    timeout_s: float = PLAYLIST_READ_TIMEOUT_S,
    max_tracks: int | None = None,
) -> Playlist:
    """Every track of the playlist (at most `max_tracks`); raises the kit's MeshError."""
    stub = playlist_pb2_grpc.PlaylistServiceStub(channel)
    playlist = Playlist()
    call = stub.ListPlaylistTracks(
        playlist_pb2.ListPlaylistTracksRequest(playlist_id=playlist_id), timeout=timeout_s
    )
    try:
        async for item in call:
            if max_tracks is not None and len(playlist.tracks) >= max_tracks:
                playlist.truncated = True
                break
            playlist.name = playlist.name or item.playlist_name
            playlist.tracks.append((item.position or len(playlist.tracks) + 1, item.track))
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error(err) from err
    finally:
        call.cancel()
    return playlist
