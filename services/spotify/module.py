"""The spotify module: what it serves and how it is built."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.kit.module.periodic import Periodic
from services.kit.module.spec import Capability, ModuleParts, ModuleSpec, ServiceBinding
from services.spotify.library_lookup import LibraryLookup
from services.spotify.servicer import AlbumCatalogServicer, PlaylistServicer, SearchServicer
from services.spotify.settings import DEFAULT_PORT, NO_CREDENTIALS, SpotifySection, SpotifySettings
from services.spotify.spotify_api import (
    SpotifyAuthError,
    SpotifyClient,
    SpotifyError,
    SpotifyNotConfigured,
    SpotifyUnreachable,
)
from soulspot.capabilities.v1 import (
    album_pb2,
    album_pb2_grpc,
    playlist_pb2,
    playlist_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)

if TYPE_CHECKING:
    from services.kit.module.runtime import ModuleRuntime

__all__ = ["SPEC", "build"]


def build(runtime: ModuleRuntime[SpotifySection]) -> ModuleParts:
    section = runtime.section
    client = SpotifyClient(
        section.client_id or None,
        section.client_secret or None,
        api_base=section.api_url,
        accounts_base=section.accounts_url,
        timeout=section.timeout_s,
        market=section.market or None,
        token_file=section.token_file or runtime.settings.state_dir / "spotify" / "token.json",
    )

    async def probe() -> None:
        if not client.configured:
            await runtime.set_health(False, NO_CREDENTIALS)
            return
        usable, reason = await client.health()
        await runtime.set_health(
            usable, reason if not usable else f"Spotify API at {section.api_url}"
        )

    async def on_backend_error(err: SpotifyError) -> None:
        # Only failures of the backend itself change health; a rate limit or a missing
        # playlist says nothing about whether the next call can succeed.
        if isinstance(err, SpotifyNotConfigured):
            await runtime.set_health(False, NO_CREDENTIALS)
        elif isinstance(err, SpotifyAuthError | SpotifyUnreachable):
            await runtime.set_health(False, str(err))

    library = LibraryLookup(runtime.capability_channel, timeout_s=section.library_lookup_timeout_s)

    # Probed in the background: an unreachable Spotify must not hold up the server's start.
    watcher = Periodic("spotify health probe", section.health_interval_s, probe, first_at_once=True)

    async def start() -> None:
        if not client.configured:
            await runtime.set_health(False, NO_CREDENTIALS)
            return
        watcher.start()

    async def stop() -> None:
        await watcher.stop()
        await client.aclose()

    return ModuleParts(
        services=[
            ServiceBinding.of(
                search_pb2.DESCRIPTOR.services_by_name["SearchService"],
                SearchServicer(client, on_backend_error, library=library),
                search_pb2_grpc.add_SearchServiceServicer_to_server,
            ),
            ServiceBinding.of(
                playlist_pb2.DESCRIPTOR.services_by_name["PlaylistService"],
                PlaylistServicer(client, on_backend_error),
                playlist_pb2_grpc.add_PlaylistServiceServicer_to_server,
            ),
            ServiceBinding.of(
                album_pb2.DESCRIPTOR.services_by_name["AlbumCatalogService"],
                AlbumCatalogServicer(client, on_backend_error),
                album_pb2_grpc.add_AlbumCatalogServiceServicer_to_server,
            ),
        ],
        start=start,
        stop=stop,
    )


SPEC = ModuleSpec(
    name="spotify",
    default_port=DEFAULT_PORT,
    capabilities=[
        Capability("search.track", 10),
        Capability("playlist.tracks", 10),
        Capability("album.tracks", 10),
    ],
    factory=build,
    section_cls=SpotifySection,
    settings_cls=SpotifySettings,
)
