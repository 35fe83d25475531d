"""`soulspot xds bootstrap`: the xDS bootstrap file a proxyless gRPC client needs to take its
routes from the router (services/kit/rpc/xds_bootstrap.py says what a client must pass)."""

from __future__ import annotations

from pathlib import Path  # noqa: TC003 (typer reads the annotation at runtime)
from typing import Annotated

import typer

from cli.console import err_console
from cli.router_connection import RouterOption, cli_settings, pki_dir_option
from services.kit.rpc.xds_bootstrap import BOOTSTRAP_FILE_ENV, bootstrap_for, write_bootstrap
from services.kit.security.identity import CLI, Identity
from services.kit.security.tls import transport_for

xds_app = typer.Typer(no_args_is_help=True, help="Proxyless gRPC clients of the router (xDS).")


def _identity(value: str) -> Identity:
    parsed = Identity.parse(value) or Identity.parse(f"spiffe://soulspot/{value}")
    if parsed is None:
        err_console.print(
            f"[red]--identity:[/] {value!r} is not kind/name (client/cli, module/library) "
            "nor a spiffe://soulspot/<kind>/<name> URI"
        )
        raise typer.Exit(2)
    return parsed


@xds_app.command("bootstrap")
def bootstrap(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write it to this file (mode 0600); default: print it."),
    ] = None,
    identity: Annotated[
        str,
        typer.Option(
            "--identity",
            help="Whose certificate the client presents: client/cli (default) or module/NAME, "
            "from the PKI folder.",
        ),
    ] = f"{CLI.kind}/{CLI.name}",
    router: RouterOption = None,
) -> None:
    """The bootstrap for GRPC_XDS_BOOTSTRAP: the router (each router, when several are given)
    as the xDS server, with credentials that follow the mesh's (mutual TLS, or insecure on a
    plaintext mesh)."""
    settings = cli_settings()
    who = _identity(identity)
    section = settings.tls
    if pki_dir_option() is not None:
        section = section.model_copy(update={"pki_dir": pki_dir_option()})
    try:
        transport = transport_for(who, section, settings.state_dir)
    except OSError as err:
        err_console.print(f"[red]credentials:[/] {err}")
        raise typer.Exit(2) from err
    # Several routers (comma-separated): one xDS server each, the later ones the first's
    # fallbacks (gRFC A71).
    text = bootstrap_for(router or settings.router_address, transport)
    if out is None:
        typer.echo(text)
        return
    written = write_bootstrap(out, text)
    err_console.print(
        f"wrote {written} for {who.uri}; run clients with {BOOTSTRAP_FILE_ENV}={written}"
    )
