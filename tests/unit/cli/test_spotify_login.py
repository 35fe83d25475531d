"""The login's loopback listener: one answer on the redirect path, nothing elsewhere; the
redirect URI setting accepts only loopback http addresses."""

from __future__ import annotations

import asyncio

import httpx
import pydantic
import pytest

from cli.spotify_login import CallbackServer, LoginSettings, SpotifyLoginSection


async def test_the_listener_takes_one_answer_on_its_path() -> None:
    server = CallbackServer("http://127.0.0.1:0/callback")
    try:
        assert server.redirect_uri.startswith("http://127.0.0.1:")
        assert server.redirect_uri.endswith("/callback")
        async with httpx.AsyncClient() as browser:
            elsewhere = await browser.get(server.redirect_uri.replace("/callback", "/other"))
            assert elsewhere.status_code == 404
            first = await browser.get(f"{server.redirect_uri}?code=abc&state=s1")
            assert first.status_code == 200
            second = await browser.get(f"{server.redirect_uri}?code=evil&state=s2")
            assert second.status_code == 404
        answer = await asyncio.to_thread(server.wait, 5)
        assert answer == {"code": "abc", "state": "s1"}
    finally:
        server.close()


async def test_no_answer_in_time_is_none() -> None:
    server = CallbackServer("http://127.0.0.1:0/callback")
    try:
        assert await asyncio.to_thread(server.wait, 0.05) is None
    finally:
        server.close()


@pytest.mark.parametrize(
    "uri", ["https://127.0.0.1:8888/callback", "http://example.com:8888/cb", "ftp://x"]
)
def test_only_loopback_http_redirects(uri: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="loopback http address"):
        SpotifyLoginSection(redirect_uri=uri)


def test_the_token_file_defaults_to_the_state_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULSPOT_STATE_DIR", "/srv/soulspot/state")
    monkeypatch.delenv("SOULSPOT_SPOTIFY__TOKEN_FILE", raising=False)
    assert str(LoginSettings().token_file()) == "/srv/soulspot/state/spotify/token.json"
