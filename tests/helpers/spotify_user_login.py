"""A Spotify user login against the stand-in, stored where the spotify module reads it: the
browser's consent and the code exchange, as `soulspot login spotify` does them."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx

from cli.spotify_login import authorize_url, exchange_code, pkce_pair
from services.kit.support.secret_file import write_secret_json

if TYPE_CHECKING:
    from pathlib import Path

    from tests.standins.spotify import SpotifyStandin

REDIRECT = "http://127.0.0.1:8888/callback"


def log_in_as_user(standin: SpotifyStandin, token_file: Path) -> str:
    """Consent in the stand-in, exchange the code and store the refresh token in
    `token_file`; the refresh token. Blocking: call it through asyncio.to_thread."""
    verifier, challenge = pkce_pair()
    url = authorize_url(standin.base_url, standin.client_id, REDIRECT, challenge, "st4te")
    back = httpx.get(url, follow_redirects=False, timeout=5)
    query = {k: v[0] for k, v in parse_qs(urlsplit(back.headers["location"]).query).items()}
    tokens = exchange_code(standin.base_url, standin.client_id, query["code"], REDIRECT, verifier)
    refresh = str(tokens["refresh_token"])
    write_secret_json(token_file, {"client_id": standin.client_id, "refresh_token": refresh})
    return refresh
