"""The spotify module's settings: `SOULSPOT_SPOTIFY__*` or `spotify:` in the config file."""

from __future__ import annotations

from pathlib import Path  # noqa: TC003 (pydantic reads the annotation at runtime)

from services.kit.module.spec import ModuleSection
from services.kit.support.settings import KitSettings
from services.spotify.spotify_api import DEFAULT_ACCOUNTS_BASE, DEFAULT_API_BASE

# Both variables in full: a user copies them from the status or the refused call.
NO_CREDENTIALS = (
    "no Spotify credentials (set SOULSPOT_SPOTIFY__CLIENT_ID and SOULSPOT_SPOTIFY__CLIENT_SECRET)"
)


DEFAULT_PORT = 50061


class SpotifySection(ModuleSection):
    # SOULSPOT_SPOTIFY__CLIENT_ID / __CLIENT_SECRET: a Spotify app's client credentials.
    client_id: str = ""
    client_secret: str = ""
    # SOULSPOT_SPOTIFY__API_URL / __ACCOUNTS_URL: the Web API and accounts service.
    api_url: str = DEFAULT_API_BASE
    accounts_url: str = DEFAULT_ACCOUNTS_BASE
    # SOULSPOT_SPOTIFY__MARKET: an ISO country code for track relinking, when wanted.
    market: str = ""
    # Seconds one Spotify request may take.
    timeout_s: float = 10.0
    # How often an unusable backend is probed again, in seconds.
    health_interval_s: float = 60.0
    # How long a search waits to learn which results the library holds (library.check_
    # downloaded through the router); 0 skips the lookup. Results not confirmed in time
    # show as not in the library.
    library_lookup_timeout_s: float = 0.5
    # SOULSPOT_SPOTIFY__TOKEN_FILE: the user's login (refresh token) that `soulspot login
    # spotify` stores, for liked songs and private playlists; default
    # <state dir>/spotify/token.json.
    token_file: Path | None = None


class SpotifySettings(KitSettings):
    spotify: SpotifySection = SpotifySection()
