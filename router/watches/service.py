"""PlaylistWatchService: add, remove, list and run the playlists the router re-syncs on a
schedule, and the scheduler that runs them, on a channel to the router's own address.

Only clients (the command line) and the policy's admins may call it (router/security/policy.py
`playlist_watchers`); the caller's verified identity is stored as the watch's owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from router.security.quotas import quota_failure
from router.watches.fetch import PlaylistFetcher
from router.watches.scheduler import WatchScheduler
from router.watches.store import DB_FILE, SqliteWatchStore, WatchLimitReached
from services.kit.rpc.channel import open_channel
from services.kit.rpc.errors import InvalidArgument, NotFound, Unavailable, bad_request
from services.kit.support.intervals import format_interval
from services.kit.support.playlist_reference import canonical_playlist
from services.kit.support.tasks import cancel_within
from soulspot.router.v1 import watches_pb2, watches_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Callable

    from router.security.caller import Callers
    from router.watches.store import WatchRecord, WatchStore
    from soulspot.router.v1 import router_pb2

_log = logging.getLogger("router.watches")
Context = grpc.aio.ServicerContext[Any, Any]
SERVICE_NAME = watches_pb2.DESCRIPTOR.services_by_name["PlaylistWatchService"].full_name

# How long stopping waits for the scheduler to end: about one NATS request (nats-py's
# JetStream timeout), the longest its store calls should take to give in.
STOP_WAIT_S = 5.0
MIN_EVERY_S = 300.0
MAX_EVERY_S = 30 * 86400.0
MAX_PLAYLIST_ID_CHARS = 512
MAX_WATCHES_SETTING = "SOULSPOT_ROUTER__MAX_PLAYLIST_WATCHES"


def every_problem(seconds: float) -> str:
    """Why an interval is refused ("" when it is fine)."""
    if MIN_EVERY_S <= seconds <= MAX_EVERY_S:
        return ""
    return (
        f"every {format_interval(seconds)} is outside {format_interval(MIN_EVERY_S)} .. "
        f"{format_interval(MAX_EVERY_S)}"
    )


def _playlist_id(value: str) -> str:
    """The watch's key: a share URL, a URI and the bare id name one watch."""
    playlist_id = canonical_playlist(value)
    if not playlist_id:
        raise InvalidArgument(
            "playlist_id is required", details=[bad_request({"playlist_id": "required"})]
        )
    if len(playlist_id) > MAX_PLAYLIST_ID_CHARS:
        problem = f"at most {MAX_PLAYLIST_ID_CHARS} characters"
        raise InvalidArgument(
            f"playlist_id: {problem}", details=[bad_request({"playlist_id": problem})]
        )
    return playlist_id


class PlaylistWatches(watches_pb2_grpc.PlaylistWatchServiceServicer):
    """The service and its scheduler. `start(address)` once the router serves; `stop()`
    before the router's server stops, so no run holds its grace period open."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        max_watches: int = 100,
        max_tracks: int = 10_000,
        store: WatchStore | None = None,
        clock: Callable[[], float] = time.time,
        playlist_wait_s: float | None = None,
    ) -> None:
        self.store: WatchStore = store or SqliteWatchStore(Path(state_dir) / DB_FILE)
        self.max_watches = max_watches
        self.max_tracks = max_tracks
        # Set by RouterApp: who may call (None: plaintext tests without an app).
        self.callers: Callers | None = None
        self._clock = clock
        self._playlist_wait_s = playlist_wait_s
        self.scheduler: WatchScheduler | None = None
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, router_address: str) -> None:
        await self.store.open()
        self._channel = open_channel(router_address)
        extra = {} if self._playlist_wait_s is None else {"playlist_wait_s": self._playlist_wait_s}
        fetcher = PlaylistFetcher(
            self._channel, self.store, max_tracks=self.max_tracks, clock=self._clock, **extra
        )
        self.scheduler = WatchScheduler(self.store, fetcher.run, clock=self._clock)
        self._task = asyncio.ensure_future(self.scheduler.serve())

    async def stop(self) -> None:
        """Stop running watches (a run cut short runs again when next due); idempotent. The
        scheduler ends within STOP_WAIT_S, cancelled again meanwhile (a NATS request may lose
        a cancellation, see cancel_within); the store bounds its own close."""
        task, self._task = self._task, None
        if not await cancel_within(task, STOP_WAIT_S):
            _log.warning("the playlist watch scheduler did not end within %gs", STOP_WAIT_S)
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
            await self.store.close()

    # --- status ----------------------------------------------------------------------------

    async def watches(self) -> list[watches_pb2.PlaylistWatch]:
        return [self._proto(w) for w in await self.store.list_watches()]

    async def fill_status(self, response: router_pb2.GetStatusResponse) -> None:
        """Add the watched playlists to the router's status."""
        response.watched_playlists.extend(await self.watches())

    # --- the service -----------------------------------------------------------------------

    def _caller(self, context: Context, operation: str) -> str:
        """The caller's identity URI ("" in plaintext), once it may call `operation`."""
        if self.callers is None:
            return ""
        caller = self.callers.identify(context)
        self.callers.check_playlist_watcher(caller, operation)
        return caller.uri if caller is not None else ""

    def _proto(self, record: WatchRecord) -> watches_pb2.PlaylistWatch:
        # Running here, or under another router's live claim (a shared store).
        running = (
            self.scheduler is not None and record.playlist_id in self.scheduler.running
        ) or record.claimed_at(self._clock())
        return record.to_proto(running=running)

    async def AddPlaylistWatch(
        self, request: watches_pb2.AddPlaylistWatchRequest, context: Context
    ) -> watches_pb2.AddPlaylistWatchResponse:
        owner = self._caller(context, "AddPlaylistWatch")
        problems: dict[str, str] = {}
        # A share URL, a URI and the bare id are one watch (and one row), however written.
        playlist_id = canonical_playlist(request.playlist_id)
        if not playlist_id:
            problems["playlist_id"] = "required"
        elif len(playlist_id) > MAX_PLAYLIST_ID_CHARS:
            problems["playlist_id"] = f"at most {MAX_PLAYLIST_ID_CHARS} characters"
        every_s = request.every.ToTimedelta().total_seconds()
        if not request.HasField("every"):
            problems["every"] = (
                f"required: from {format_interval(MIN_EVERY_S)} to {format_interval(MAX_EVERY_S)}"
            )
        elif every_problem(every_s):
            problems["every"] = every_problem(every_s)
        if problems:
            raise InvalidArgument(
                "; ".join(f"{field}: {why}" for field, why in problems.items()),
                details=[bad_request(problems)],
            )
        try:
            record, created = await self.store.upsert(
                playlist_id, every_s, owner=owner, now=self._clock(), limit=self.max_watches
            )
        except WatchLimitReached as err:
            raise quota_failure(
                "the router", MAX_WATCHES_SETTING, err.limit, "watched playlists"
            ) from None
        _log.info(
            "%s playlist %s every %s",
            "watching" if created else "re-timed watch of",
            playlist_id,
            format_interval(every_s),
            extra={"playlist_id": playlist_id, "owner": owner},
        )
        if self.scheduler is not None:
            self.scheduler.wake()
        return watches_pb2.AddPlaylistWatchResponse(watch=self._proto(record), created=created)

    async def RemovePlaylistWatch(
        self, request: watches_pb2.RemovePlaylistWatchRequest, context: Context
    ) -> watches_pb2.RemovePlaylistWatchResponse:
        self._caller(context, "RemovePlaylistWatch")
        playlist_id = _playlist_id(request.playlist_id)
        record = await self.store.remove(playlist_id)
        if record is None:
            raise NotFound(f"no watch of playlist {playlist_id!r}")
        _log.info("stopped watching playlist %s", playlist_id)
        if self.scheduler is not None:
            self.scheduler.wake()
        return watches_pb2.RemovePlaylistWatchResponse(watch=self._proto(record))

    async def ListPlaylistWatches(
        self, request: watches_pb2.ListPlaylistWatchesRequest, context: Context
    ) -> watches_pb2.ListPlaylistWatchesResponse:
        self._caller(context, "ListPlaylistWatches")
        return watches_pb2.ListPlaylistWatchesResponse(watches=await self.watches())

    async def RunPlaylistWatch(
        self, request: watches_pb2.RunPlaylistWatchRequest, context: Context
    ) -> watches_pb2.RunPlaylistWatchResponse:
        self._caller(context, "RunPlaylistWatch")
        playlist_id = _playlist_id(request.playlist_id)
        if self.scheduler is None:
            raise Unavailable("the router's playlist watches have not started yet")
        record = await self.scheduler.run_watch(playlist_id)
        if record is None:
            raise NotFound(f"no watch of playlist {playlist_id!r}")
        self.scheduler.wake()
        return watches_pb2.RunPlaylistWatchResponse(watch=self._proto(record))
