"""`soulspot login spotify`: log in to Spotify as a user, so liked songs and private playlists
can be synced.

Prints the consent address (and opens it in a browser when there is one), waits on the
loopback redirect address for Spotify's answer, checks its `state`, exchanges the code with
the PKCE verifier and stores the refresh token where the spotify module reads it.
"""

from __future__ import annotations

import contextlib
import secrets
import webbrowser
from typing import Annotated

import pydantic
import typer

from cli.console import console, err_console
from cli.spotify_login import (
    CallbackServer,
    LoginError,
    LoginSettings,
    authorize_url,
    exchange_code,
    pkce_pair,
)
from services.kit.support.secret_file import write_secret_json

login_app = typer.Typer(no_args_is_help=True)


@login_app.command("spotify")
def spotify(
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Only print the address; open no browser.")
    ] = False,
) -> None:
    """Log in to Spotify (authorization code with PKCE) for liked songs and private playlists."""
    try:
        settings = LoginSettings()
    except (FileNotFoundError, pydantic.ValidationError) as err:
        err_console.print(f"[red]settings:[/] {err}")
        raise typer.Exit(2) from err
    section = settings.spotify
    if not section.client_id:
        err_console.print(
            "[red]no Spotify app:[/] set SOULSPOT_SPOTIFY__CLIENT_ID to the client id of your "
            f"app, with {section.redirect_uri} among its redirect URIs"
        )
        raise typer.Exit(2)
    try:
        stored = _login(settings, open_browser=not no_browser)
    except LoginError as err:
        err_console.print(f"[red]login failed:[/] {err}")
        raise typer.Exit(1) from err
    console.print(f"logged in to Spotify; the login is stored in {stored}", soft_wrap=True)


def _login(settings: LoginSettings, *, open_browser: bool) -> str:
    section = settings.spotify
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(24)
    server = CallbackServer(section.redirect_uri)
    try:
        url = authorize_url(
            section.accounts_url, section.client_id, server.redirect_uri, challenge, state
        )
        # Plain print: a console would wrap the long address and break it for copying.
        print("Open this address in a browser to log in to Spotify:", flush=True)
        print(url, flush=True)
        if open_browser:
            # No browser (a server, a container) is fine: the address is printed above.
            with contextlib.suppress(Exception):
                webbrowser.open(url)
        answer = server.wait(section.login_timeout_s)
    finally:
        server.close()
    if answer is None:
        raise LoginError(
            f"no answer from the browser within {section.login_timeout_s:g}s "
            "(SOULSPOT_SPOTIFY__LOGIN_TIMEOUT_S)"
        )
    if not secrets.compare_digest(answer.get("state", ""), state):
        raise LoginError("the answer's state does not match this login; nothing was stored")
    if "error" in answer or "code" not in answer:
        raise LoginError(f"Spotify did not grant access ({answer.get('error', 'no code')})")
    tokens = exchange_code(
        section.accounts_url, section.client_id, answer["code"], server.redirect_uri, verifier
    )
    token_file = settings.token_file()
    try:
        write_secret_json(
            token_file,
            {
                "client_id": section.client_id,
                "refresh_token": str(tokens["refresh_token"]),
                "scope": str(tokens.get("scope", "")),
            },
        )
    except OSError as err:
        raise LoginError(f"cannot store the login in {token_file}: {err.strerror or err}") from err
    return str(token_file)
