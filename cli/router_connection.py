"""The router every command talks to: the one `--router` option, its address and the
channel to it, with the router's failures turned into messages and exit codes.

The option's default comes from the kit's typed settings (`SOULSPOT_ROUTER_ADDRESS`, the
YAML file named by `SOULSPOT_CONFIG`, then 127.0.0.1:50051), the same address every module
of the mesh reads. Every command speaks mutual TLS as the command line
(spiffe://soulspot/client/cli) with the certificates of `soulspot --pki-dir`, else of the
same settings (SOULSPOT_TLS__PKI_DIR, else `<state dir>/pki`), or plaintext with
SOULSPOT_TLS__PLAINTEXT=true.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import grpc
import pydantic
import typer

from cli.console import err_console
from cli.output import print_result
from services.kit.rpc.channel import open_channel
from services.kit.rpc.errors import from_rpc_error
from services.kit.security.identity import CLI
from services.kit.security.tls import Transport, transport_for, use_transport
from services.kit.support.settings import KitSettings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from rich.console import RenderableType

    from cli.output import OutputFormat

RouterOption = Annotated[
    str | None,
    typer.Option(
        "--router",
        help=(
            "The router's gRPC address, or several routers' comma-separated (calls go to any"
            " that answers; default: SOULSPOT_ROUTER_ADDRESS, else 127.0.0.1:50051)."
        ),
        show_default=False,
    ),
]

PkiDirOption = Annotated[
    Path | None,
    typer.Option(
        "--pki-dir",
        help="The mesh's certificates (default: SOULSPOT_TLS__PKI_DIR, else <state dir>/pki).",
        show_default=False,
    ),
]

# Failures that mean "no router there" rather than "the router said no".
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# `soulspot --pki-dir DIR`, over the settings' PKI folder.
_pki_dir_option: Path | None = None


def set_pki_dir(path: Path | None) -> None:
    """Remember `soulspot --pki-dir` for the command that runs next."""
    global _pki_dir_option
    _pki_dir_option = path


def pki_dir_option() -> Path | None:
    """`soulspot --pki-dir`, when it was given."""
    return _pki_dir_option


def cli_settings() -> KitSettings:
    """The kit's settings as this command reads them; exit code 2 when they are invalid."""
    try:
        return KitSettings()
    except (FileNotFoundError, pydantic.ValidationError) as err:
        err_console.print(f"[red]settings:[/] {err}")
        raise typer.Exit(2) from err


def use_cli_transport(settings: KitSettings, pki_dir: Path | None = None) -> Transport:
    """Make this process speak as the command line: mutual TLS with its certificate, or
    plaintext when the settings say so. Exit code 2 when its credentials are missing."""
    section = settings.tls
    folder = pki_dir or _pki_dir_option
    if folder is not None:
        section = section.model_copy(update={"pki_dir": folder})
    try:
        transport = transport_for(CLI, section, settings.state_dir)
    except OSError as err:
        err_console.print(f"[red]credentials:[/] {err}")
        raise typer.Exit(2) from err
    use_transport(transport)
    return transport


def router_address(option: str | None) -> str:
    """The --router value, else the settings' router address; every channel this command
    opens then speaks as the command line (`use_cli_transport`). Exit code 2 on bad settings
    or missing credentials."""
    settings = cli_settings()
    use_cli_transport(settings)
    return option or settings.router_address


async def call(awaitable: Awaitable[Any]) -> Any:
    """Await a gRPC call, turning its failure into the typed mesh error."""
    try:
        return await awaitable
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error(err) from err


def run_on_router(router: str | None, body: Callable[[grpc.aio.Channel], Awaitable[int]]) -> None:
    """Run one command's calls on a channel to the router (the --router value, else the
    settings' address: `router_address`) and exit with the body's code.

    A failed call ends the command with code 1 and one line: unreachable, or the router's
    status and message. Ctrl-C ends it quietly (`events tail` runs until then).
    """

    address = router_address(router)

    async def main() -> int:
        async with open_channel(address) as channel:
            try:
                return await body(channel)
            except grpc.aio.AioRpcError as err:
                error = from_rpc_error(err)
                if err.code() in _UNREACHABLE:
                    err_console.print(f"[red]router {address} unreachable:[/] {error.message}")
                else:
                    err_console.print(f"[red]{err.code().name}:[/] {error.message}")
                return 1

    with contextlib.suppress(KeyboardInterrupt):
        raise typer.Exit(asyncio.run(main()))


def show_from_router(
    router: str | None,
    fmt: OutputFormat,
    fetch: Callable[[grpc.aio.Channel], Awaitable[tuple[dict[str, Any], Sequence[RenderableType]]]],
) -> None:
    """A command that only shows what the router answers: `fetch` calls it and returns the
    JSON document and the tables, printed in the chosen format; exit code 0 (1 on a failed
    call, as `run_on_router`)."""

    async def body(channel: grpc.aio.Channel) -> int:
        document, renderables = await fetch(channel)
        print_result(fmt, document, renderables)
        return 0

    run_on_router(router, body)
