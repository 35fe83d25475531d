"""SearchServicer, PlaylistServicer and AlbumCatalogServicer: search.track, playlist.tracks
and album.tracks served from the Spotify Web API."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from services.kit.rpc.errors import InvalidArgument, NotFound, bad_request
from services.kit.support.playlist_reference import is_liked_songs, parse_playlist_id
from services.spotify.mapping import mesh_error, track_reference
from services.spotify.spotify_api import LIKED_SONGS_NAME, SpotifyError
from soulspot.capabilities.v1 import (
    album_pb2,
    album_pb2_grpc,
    playlist_pb2,
    playlist_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import grpc

    from services.spotify.library_lookup import LibraryLookup
    from services.spotify.spotify_api import SpotifyClient

__all__ = ["AlbumCatalogServicer", "PlaylistServicer", "SearchServicer"]

log = logging.getLogger("soulspot.spotify")

DEFAULT_LIMIT = 10
MAX_LIMIT = 50


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(
        self,
        client: SpotifyClient,
        on_backend_error: Callable[[SpotifyError], Awaitable[None]],
        *,
        library: LibraryLookup | None = None,
    ) -> None:
        self._client = client
        self._on_backend_error = on_backend_error
        self._library = library

    async def SearchTrack(
        self,
        request: search_pb2.SearchTrackRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> search_pb2.SearchTrackResponse:
        limit = min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
        try:
            found = await self._client.search_tracks(request.query, limit)
        except SpotifyError as err:
            await self._on_backend_error(err)
            raise mesh_error(err) from err
        # Spotify orders results by its own relevance; the score says the same thing in the
        # contract's 0..1 range (the best result 1.0, then evenly down).
        count = len(found)
        tracks = [track_reference(track) for track in found]
        held = await self._library.holds(tracks) if self._library is not None else [False] * count
        return search_pb2.SearchTrackResponse(
            results=[
                search_pb2.SearchResult(
                    track=track,
                    score=round(1.0 - index / max(count, 1), 4),
                    source="spotify",
                    in_library=in_library,
                )
                for index, (track, in_library) in enumerate(zip(tracks, held, strict=True))
            ]
        )


class PlaylistServicer(playlist_pb2_grpc.PlaylistServiceServicer):
    def __init__(
        self, client: SpotifyClient, on_backend_error: Callable[[SpotifyError], Awaitable[None]]
    ) -> None:
        self._client = client
        self._on_backend_error = on_backend_error

    async def ListPlaylistTracks(
        self,
        request: playlist_pb2.ListPlaylistTracksRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[playlist_pb2.ListPlaylistTracksResponse]:
        if is_liked_songs(request.playlist_id):
            async for item in self._liked_songs():
                yield item
            return
        playlist_id = parse_playlist_id(request.playlist_id)
        if playlist_id is None:
            raise InvalidArgument(
                f"not a Spotify playlist id, URI or URL: {request.playlist_id!r}",
                details=[
                    bad_request(
                        {
                            "playlist_id": "expected an id, spotify:playlist:ID, "
                            "https://open.spotify.com/playlist/ID or liked"
                        }
                    )
                ],
            )
        # Name and total come from one small request first, so every track can be sent as
        # soon as its page is read instead of after the whole playlist. The total is
        # Spotify's item count: removed tracks, local files and episodes are counted there but
        # skipped here, so fewer tracks than the total may arrive. A failure before the first
        # track lets the router fall back; one after it ends the stream with the error.
        try:
            playlist = await self._client.playlist(playlist_id)
            position = 0
            async for track in self._client.playlist_tracks(playlist_id):
                position += 1
                yield playlist_pb2.ListPlaylistTracksResponse(
                    track=track_reference(track),
                    position=position,
                    total=playlist["total"],
                    playlist_name=playlist["name"],
                )
        except SpotifyError as err:
            await self._on_backend_error(err)
            raise mesh_error(err) from err

    async def _liked_songs(self) -> AsyncIterator[playlist_pb2.ListPlaylistTracksResponse]:
        """The logged-in user's liked songs as a playlist; FAILED_PRECONDITION, naming the
        login command, when there is no login Spotify accepts."""
        # The total comes with the first page, so nothing is fetched twice; every track
        # carries that first total even if the count moves while later pages are read.
        try:
            total: int | None = None
            position = 0
            async for page in self._client.liked_pages():
                total = page["total"] if total is None else total
                for track in page["tracks"]:
                    position += 1
                    yield playlist_pb2.ListPlaylistTracksResponse(
                        track=track_reference(track),
                        position=position,
                        total=total,
                        playlist_name=LIKED_SONGS_NAME,
                    )
        except SpotifyError as err:
            await self._on_backend_error(err)
            raise mesh_error(err) from err


class AlbumCatalogServicer(album_pb2_grpc.AlbumCatalogServiceServicer):
    """album.tracks: an album's track list from Spotify's catalogue."""

    def __init__(
        self,
        client: SpotifyClient,
        on_backend_error: Callable[[SpotifyError], Awaitable[None]],
    ) -> None:
        self._client = client
        self._on_backend_error = on_backend_error

    async def GetAlbumTracks(
        self,
        request: album_pb2.GetAlbumTracksRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> album_pb2.GetAlbumTracksResponse:
        try:
            found = await self._client.find_album(request.artist, request.album)
        except SpotifyError as err:
            await self._on_backend_error(err)
            raise mesh_error(err) from err
        if found is None:
            raise NotFound(f"Spotify knows no album {request.album!r} by {request.artist!r}")
        album, tracks = found
        return album_pb2.GetAlbumTracksResponse(
            artist=album["artists"],
            album=album["name"],
            album_id=album["album_id"],
            tracks=[track_reference(track) for track in tracks],
        )
