"""The `soulspot` command: a gRPC client of the router, plus `up` to run the mesh locally.

Each command lives in its own file under cli/commands/; this file only mounts them.
"""

from __future__ import annotations

import typer

from cli.commands import (
    dlq,
    events,
    get,
    login,
    status,
    sync_playlist,
    up,
    watch_playlist,
    worker,
    xds,
)
from cli.router_connection import PkiDirOption, set_pki_dir

app = typer.Typer(
    name="soulspot",
    help="SoulSpot mesh: bring what you find on Spotify into your own music library.",
    add_completion=False,
    no_args_is_help=True,
)


@app.callback()
def mesh_options(pki_dir: PkiDirOption = None) -> None:
    """SoulSpot mesh: bring what you find on Spotify into your own music library."""
    # Only remembered here: `--help` of a command must work before any certificate exists.
    set_pki_dir(pki_dir)


app.command("status")(status.status)
app.command("get")(get.get)
app.command("sync-playlist")(sync_playlist.sync_playlist)
app.command("worker")(worker.worker)
app.command("up")(up.up)
app.add_typer(events.events_app, name="events", help="Inspect and follow the event log.")
app.add_typer(dlq.dlq_app, name="dlq", help="Inspect and replay dead letters.")
app.add_typer(
    watch_playlist.watch_playlist_app,
    name="watch-playlist",
    help="Keep a playlist in sync on a schedule (run by the router).",
)
app.add_typer(xds.xds_app, name="xds", help="Proxyless gRPC clients of the router (xDS).")
app.add_typer(login.login_app, name="login", help="Log in to a service as yourself.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
