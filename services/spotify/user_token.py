"""The user's Spotify login: access tokens refreshed from the refresh token that
`soulspot login spotify` stored (authorization code flow with PKCE).

The refresh token file is read at every refresh, so a new login takes effect without a
restart. When Spotify answers a refresh with a new refresh token (rotation), the file is
replaced with it at once. A refresh token Spotify no longer accepts ends in LoginNeeded, whose
message tells the user to log in again. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httpx

from services.kit.support.secret_file import read_secret_json, write_secret_json

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["LOGIN_COMMAND", "UserAuth"]

LOGIN_COMMAND = "soulspot login spotify"
# Refresh this long before the access token expires.
REFRESH_MARGIN_S = 60.0


class UserAuth:
    """Access tokens for the logged-in user, refreshed from the stored refresh token.

    Failures raise the exception types given by the client (`login_needed(message)`,
    `unreachable(message)`, `failed(message)`), so this module needs no import of the client.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        accounts_base: str,
        client_id: str,
        token_file: Path,
        login_needed: type[Exception],
        unreachable: type[Exception],
        failed: type[Exception],
    ) -> None:
        self._http = http
        self._accounts_base = accounts_base.rstrip("/")
        self._client_id = client_id
        self.token_file = token_file
        self._login_needed = login_needed
        self._unreachable = unreachable
        self._failed = failed
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def logged_in(self) -> bool:
        """Whether a login was stored (not whether Spotify still accepts it)."""
        return self.token_file.is_file()

    async def access_token(self, *, rejected: str | None = None) -> str:
        async with self._lock:
            stale = time.monotonic() >= self._expires_at - REFRESH_MARGIN_S
            if self._token is None or stale or (rejected is not None and rejected == self._token):
                await self._refresh()
            assert self._token is not None
            return self._token

    async def _refresh(self) -> None:
        try:
            stored = await asyncio.to_thread(read_secret_json, self.token_file)
        except (OSError, ValueError) as err:
            raise self._login_needed(
                f"the stored Spotify login cannot be read ({err}): run `{LOGIN_COMMAND}` again"
            ) from err
        if not stored or not stored.get("refresh_token"):
            raise self._login_needed(
                f"not logged in to Spotify (no login stored at {self.token_file}): "
                f"run `{LOGIN_COMMAND}`"
            )
        client_id = str(stored.get("client_id") or self._client_id)
        try:
            response = await self._http.post(
                f"{self._accounts_base}/api/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": str(stored["refresh_token"]),
                    "client_id": client_id,
                },
            )
        except httpx.TransportError as err:
            raise self._unreachable(f"Spotify accounts service unreachable: {err}") from err
        if response.status_code in (400, 401):
            # invalid_grant: the refresh token expired, was revoked, or belongs to another app.
            self._token = None
            raise self._login_needed(
                "Spotify no longer accepts the stored login (expired or revoked): "
                f"run `{LOGIN_COMMAND}` again"
            )
        if response.status_code >= 400:
            raise self._failed(f"Spotify token refresh failed ({response.status_code})")
        data = response.json()
        self._token = str(data["access_token"])
        self._expires_at = time.monotonic() + float(data.get("expires_in", 3600))
        rotated = data.get("refresh_token")
        if rotated and rotated != stored["refresh_token"]:
            # Spotify may retire the old refresh token once it issued a new one: keep the new.
            await asyncio.to_thread(
                write_secret_json,
                self.token_file,
                {
                    **stored,
                    "refresh_token": str(rotated),
                    "scope": data.get("scope") or stored.get("scope", ""),
                },
            )
