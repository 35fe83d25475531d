"""The `soulspot` command: a gRPC client of the router, plus `up` to run the mesh locally."""

from __future__ import annotations

import typer

from cli import events_cmd, flows, status_cmd, up

app = typer.Typer(
    name="soulspot",
    help="SoulSpot mesh: bring what you find on Spotify into your own music library.",
    add_completion=False,
    no_args_is_help=True,
)
app.command()(status_cmd.status)
app.command()(flows.get)
app.command("sync-playlist")(flows.sync_playlist)
app.command()(flows.worker)
app.command()(up.up)
app.add_typer(events_cmd.events_app, name="events", help="Inspect and follow the event log.")
app.add_typer(events_cmd.dlq_app, name="dlq", help="Inspect and replay dead letters.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
