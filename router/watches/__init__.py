"""Playlists the router keeps in sync on a schedule (`soulspot watch-playlist`).

Wiring, in the router's main:

    watches = create_watches(settings)                   # SQLite, or JetStream KV
    app = RouterApp(settings, ..., watches=watches)      # serves PlaylistWatchService
    await app.start()
    await watches.start(app.address)                     # after the router serves
    ...
    await app.stop()                                     # stops the watches' runs first

store.py keeps watches (SQLite, behind the `WatchStore` protocol), kv_store.py in JetStream
KV when the bus is on JetStream (shared by every router on that NATS, each due run claimed by
one router; listed through the bus's `list_kv`, kv_changes.py waking the scheduler on other
routers' changes), scheduler.py decides when each runs, fetch.py runs one (playlist.tracks, then
download.track for each track not requested before), service.py serves the RPCs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.bus.settings import BusSettings
from router.settings import RouterSection
from router.watches.kv_store import KvWatchStore
from router.watches.service import SERVICE_NAME, PlaylistWatches
from services.kit.support.settings import section_of

if TYPE_CHECKING:
    from services.kit.support.settings import KitSettings

__all__ = ["SERVICE_NAME", "PlaylistWatches", "create_watches"]


def create_watches(settings: KitSettings) -> PlaylistWatches:
    """The playlist watches of a router with these settings, bounded by the router
    section's max_playlist_watches and watch_max_tracks. With the bus on JetStream they live
    in the JetStream KV every router on that NATS shares (as the pipeline's runs do), else in
    SQLite under the state folder."""
    section = section_of(settings, "router", RouterSection)
    bus = section_of(settings, "bus", BusSettings)
    store = (
        KvWatchStore(bus.nats_servers, replicas=bus.nats_replicas, lease_s=section.watch_lease_s)
        if bus.backend == "jetstream"
        else None
    )
    return PlaylistWatches(
        settings.state_dir,
        max_watches=section.max_playlist_watches,
        max_tracks=section.watch_max_tracks,
        store=store,
    )
