"""Playlists the router keeps in sync on a schedule (`soulspot watch-playlist`).

Wiring, in the router's main:

    watches = create_watches(settings)                   # its store in the state folder
    app = RouterApp(settings, ..., watches=watches)      # serves PlaylistWatchService
    await app.start()
    await watches.start(app.address)                     # after the router serves
    ...
    await app.stop()                                     # stops the watches' runs first

store.py keeps watches (SQLite; the `WatchStore` protocol is the seam for another backend),
scheduler.py decides when each runs, fetch.py runs one (playlist.tracks, then download.track
for each track not requested before), service.py serves the RPCs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.settings import RouterSection
from router.watches.service import SERVICE_NAME, PlaylistWatches
from services.kit.support.settings import section_of

if TYPE_CHECKING:
    from services.kit.support.settings import KitSettings

__all__ = ["SERVICE_NAME", "PlaylistWatches", "create_watches"]


def create_watches(settings: KitSettings) -> PlaylistWatches:
    """The playlist watches of a router with these settings: stored under its state folder,
    bounded by the router section's max_playlist_watches and watch_max_tracks."""
    section = section_of(settings, "router", RouterSection)
    return PlaylistWatches(
        settings.state_dir,
        max_watches=section.max_playlist_watches,
        max_tracks=section.watch_max_tracks,
    )
