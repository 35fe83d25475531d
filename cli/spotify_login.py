"""Logging in to Spotify as a user: the authorization code flow with PKCE, its settings, the
loopback listener the browser is sent back to, and the code exchange.

The user's browser opens Spotify's consent page; Spotify sends it back to the redirect URI
(a loopback address this process listens on) with a code and the `state` this process chose.
The code and the PKCE verifier buy an access token and a refresh token; only the refresh token
is kept, in the state folder, readable by the user alone (services/kit/support/secret_file.py).
The spotify module reads it from there (SOULSPOT_SPOTIFY__TOKEN_FILE).
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path  # noqa: TC003 (pydantic reads the annotation at runtime)
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
from pydantic import Field, field_validator

from services.kit.support.settings import KitSettings, Section

__all__ = [
    "DEFAULT_REDIRECT_URI",
    "SCOPES",
    "CallbackServer",
    "LoginError",
    "LoginSettings",
    "authorize_url",
    "exchange_code",
    "pkce_pair",
]

DEFAULT_REDIRECT_URI = "http://127.0.0.1:8888/callback"
DEFAULT_ACCOUNTS_URL = "https://accounts.spotify.com"
# Liked songs, and private and collaborative playlists.
SCOPES = "user-library-read playlist-read-private playlist-read-collaborative"
_LOOPBACK = frozenset({"127.0.0.1", "localhost"})


class LoginError(Exception):
    """The login did not complete; the message says why (never a token)."""


class SpotifyLoginSection(Section):
    """The `SOULSPOT_SPOTIFY__*` settings the login reads (the module reads the same names)."""

    client_id: str = Field(default="", max_length=256)
    accounts_url: str = Field(default=DEFAULT_ACCOUNTS_URL, max_length=2048)
    # Default <state dir>/spotify/token.json, where the module looks by default.
    token_file: Path | None = None
    # SOULSPOT_SPOTIFY__REDIRECT_URI: registered for the app in Spotify's dashboard; a
    # loopback http address. Port 0 (or none): any free port, for apps registered that way.
    redirect_uri: str = Field(default=DEFAULT_REDIRECT_URI, max_length=2048)
    # SOULSPOT_SPOTIFY__LOGIN_TIMEOUT_S: how long the login waits for the browser.
    login_timeout_s: float = Field(default=300.0, gt=0, le=3600)

    @field_validator("redirect_uri")
    @classmethod
    def _loopback_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "http" or parts.hostname not in _LOOPBACK:
            raise ValueError(
                "the redirect URI must be a loopback http address such as "
                f"{DEFAULT_REDIRECT_URI} (this command listens there)"
            )
        return value


class LoginSettings(KitSettings):
    spotify: SpotifyLoginSection = Field(default_factory=SpotifyLoginSection)

    def token_file(self) -> Path:
        return self.spotify.token_file or self.state_dir / "spotify" / "token.json"


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, code_challenge): 86 unreserved characters and their S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def authorize_url(
    accounts_url: str, client_id: str, redirect_uri: str, challenge: str, state: str
) -> str:
    query = urlencode(
        {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "code_challenge_method": "S256",
            "code_challenge": challenge,
            "state": state,
            "scope": SCOPES,
        }
    )
    return f"{accounts_url.rstrip('/')}/authorize?{query}"


class CallbackServer:
    """Listens on the redirect URI's loopback address for the browser's one return."""

    def __init__(self, redirect_uri: str) -> None:
        parts = urlsplit(redirect_uri)
        self._path = parts.path or "/"
        self._answer: dict[str, str] | None = None
        self._arrived = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                split = urlsplit(self.path)
                if split.path != owner._path or owner._arrived.is_set():
                    self.send_error(404)
                    return
                answer = {k: v[0] for k, v in parse_qs(split.query).items()}
                ok = "code" in answer
                text = (
                    "SoulSpot: logged in to Spotify. You can close this window."
                    if ok
                    else f"SoulSpot: Spotify said {answer.get('error', 'no code')}."
                )
                body = f"<!doctype html><title>SoulSpot</title><p>{html.escape(text)}</p>"
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body.encode())))
                self.end_headers()
                self.wfile.write(body.encode())
                owner._answer = answer
                owner._arrived.set()

            def log_message(self, format: str, *args: Any) -> None:
                # The query holds the one-time code: not for the terminal.
                return

        host = parts.hostname or "127.0.0.1"
        try:
            self._server = HTTPServer((host, parts.port or 0), Handler)
        except OSError as err:
            raise LoginError(
                f"cannot listen on {host}:{parts.port or 0} for Spotify's answer: "
                f"{err.strerror or err}"
            ) from err
        port = self._server.server_address[1]
        self.redirect_uri = urlunsplit(("http", f"{host}:{port}", self._path, "", ""))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float) -> dict[str, str] | None:
        """The query the browser came back with, or None when it did not within the time."""
        if not self._arrived.wait(timeout_s):
            return None
        return self._answer

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def exchange_code(
    accounts_url: str, client_id: str, code: str, redirect_uri: str, verifier: str
) -> dict[str, Any]:
    """Spotify's token answer for the code (access_token, refresh_token, scope, ...)."""
    try:
        response = httpx.post(
            f"{accounts_url.rstrip('/')}/api/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "code_verifier": verifier,
            },
            timeout=30.0,
        )
    except httpx.TransportError as err:
        raise LoginError(f"Spotify's accounts service is unreachable: {err}") from err
    if response.status_code >= 400:
        try:
            reason = response.json().get("error_description") or response.json().get("error")
        except ValueError:
            reason = response.text[:200]
        raise LoginError(f"Spotify refused the login code ({response.status_code}): {reason}")
    data = response.json()
    if not isinstance(data, dict) or not data.get("refresh_token"):
        raise LoginError("Spotify's answer carried no refresh token")
    return data
