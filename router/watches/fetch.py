"""One run of a watch: read the playlist through the playlist.tracks capability and bring in
every track the watch has not requested before.

A new track is first looked up in the library (library.check_downloaded); one it holds is only
remembered, any other is requested from the best download module (download.track), the way
`soulspot sync-playlist`'s workers do (services/kit/clients). A track is remembered once its
download was accepted, so a failed request is tried again at the next run.

A download accepted but never filed (it failed later, or the pipeline could not import it)
is noticed by the library: at the first run at least one interval after a track's request,
a track the library still does not hold is requested again, up to `MAX_ATTEMPTS` requests in
all; one the library holds is never requested again. The library's duplicate check stays the
backstop for anything requested twice.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from router.pipeline.calls import HealthView, is_unavailable
from router.watches.store import RunRecord
from services.kit.clients.downloads import in_library, request_download
from services.kit.clients.playlist import read_playlist
from services.kit.rpc.context import bind, new_correlation_id, new_traceparent
from services.kit.rpc.errors import MeshError
from soulspot.capabilities.v1 import download_pb2_grpc, library_pb2_grpc, playlist_pb2

if TYPE_CHECKING:
    from collections.abc import Callable

    import grpc

    from router.watches.store import KnownTrack, WatchRecord, WatchStore
    from soulspot.common.v1 import references_pb2

_log = logging.getLogger("router.watches")

PLAYLIST_SERVICE = playlist_pb2.DESCRIPTOR.services_by_name["PlaylistService"].full_name
# What the download modules see as the requester of a watch's downloads.
REQUESTED_BY = "router"
# How long a run waits for a playlist module (one that has just restarted with the router
# registers within seconds).
PLAYLIST_WAIT_S = 30.0
# How many times a watch requests one track before it gives up on it.
MAX_ATTEMPTS = 3


def track_key(track: references_pb2.TrackReference) -> str:
    """What identifies a track across runs: its source id when it has one, else its ISRC or
    MusicBrainz id, else artist and title."""
    for prefix, value in (
        ("spotify", track.spotify_id),
        ("id", track.track_id),
        ("isrc", track.isrc),
        ("mbid", track.musicbrainz_id),
    ):
        if value:
            return f"{prefix}:{value}"
    return f"name:{track.artist.strip().lower()}\x1f{track.title.strip().lower()}"


class PlaylistFetcher:
    """Runs watches on a channel to the router's own address (its proxy and health)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        store: WatchStore,
        *,
        max_tracks: int,
        clock: Callable[[], float] = time.time,
        playlist_wait_s: float = PLAYLIST_WAIT_S,
    ) -> None:
        self._channel = channel
        self._store = store
        self._max_tracks = max_tracks
        self._clock = clock
        self._playlist_wait_s = playlist_wait_s
        self._health = HealthView(channel)
        self._library = library_pb2_grpc.LibraryServiceStub(channel)
        self._downloads = download_pb2_grpc.DownloadServiceStub(channel)

    async def run(self, watch: WatchRecord) -> RunRecord:
        with bind(new_correlation_id(), new_traceparent()):
            return await self._run(watch)

    async def _run(self, watch: WatchRecord) -> RunRecord:
        playlist_id = watch.playlist_id
        await self._health.wait_serving(PLAYLIST_SERVICE, self._playlist_wait_s)
        try:
            playlist = await read_playlist(self._channel, playlist_id, max_tracks=self._max_tracks)
        except MeshError as err:
            return RunRecord(
                name="",
                result=f"cannot read the playlist: {err.code.name}: {err.message}",
                failed=True,
                tracks_in_playlist=0,
                requested=0,
            )
        known = await self._store.known_tracks(playlist_id)
        seen: set[str] = set()
        requested = again = held = 0
        problem = ""
        for _position, track in playlist.tracks:
            key = track_key(track)
            if key in seen:
                continue
            seen.add(key)
            before = known.get(key)
            if before is not None and not self._due_again(before, watch.every_s):
                continue
            if await in_library(self._library, track) is not None:
                if before is None:
                    held += 1
                await self._store.remember_tracks(
                    playlist_id, [key], self._clock(), in_library=True
                )
                continue
            try:
                await request_download(self._downloads, track, requested_by=REQUESTED_BY)
            except MeshError as err:
                problem = f"{track.artist} - {track.title}: {err.code.name}: {err.message}"
                if is_unavailable(err):
                    # No download module now: the rest waits for the next run.
                    break
                continue
            if before is None:
                requested += 1
            else:
                again += 1
            await self._store.remember_tracks(playlist_id, [key], self._clock())
        result = f"{requested} new tracks requested"
        if again:
            result += f", {again} not in the library requested again"
        if held:
            result += f", {held} already in the library"
        if playlist.truncated:
            result += f"; only the first {self._max_tracks} tracks were read"
        if problem:
            result += f"; not requested: {problem}"
        _log.info(
            "watched playlist %s: %s",
            playlist_id,
            result,
            extra={"playlist_id": playlist_id, "requested": requested},
        )
        return RunRecord(
            name=playlist.name,
            result=result,
            failed=bool(problem) and requested == 0 and again == 0 and held == 0,
            tracks_in_playlist=len(playlist.tracks),
            requested=requested + again,
        )

    def _due_again(self, track: KnownTrack, every_s: float) -> bool:
        """Whether a requested track is looked for in the library and, missing, requested
        again: not once the library holds it or after MAX_ATTEMPTS requests, and only one
        interval after its last request (a download may take a while)."""
        if track.in_library or track.attempts >= MAX_ATTEMPTS:
            return False
        return self._clock() >= track.requested_at + every_s
