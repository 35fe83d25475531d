"""The router every command talks to: the one `--router` option, its address and the
channel to it, with the router's failures turned into messages and exit codes.

The option's default comes from the kit's typed settings (`SOULSPOT_ROUTER_ADDRESS`, the
YAML file named by `SOULSPOT_CONFIG`, then 127.0.0.1:50051), the same address every module
of the mesh reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Annotated, Any

import grpc
import pydantic
import typer

from cli.console import err_console
from services.kit.rpc.channel import open_channel
from services.kit.rpc.errors import from_rpc_error
from services.kit.support.settings import KitSettings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

RouterOption = Annotated[
    str | None,
    typer.Option(
        "--router",
        help="The router's gRPC address (default: SOULSPOT_ROUTER_ADDRESS, else 127.0.0.1:50051).",
        show_default=False,
    ),
]

# Failures that mean "no router there" rather than "the router said no".
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def router_address(option: str | None) -> str:
    """The --router value, else the settings' router address; exit code 2 on bad settings."""
    if option:
        return option
    try:
        return KitSettings().router_address
    except (FileNotFoundError, pydantic.ValidationError) as err:
        err_console.print(f"[red]settings:[/] {err}")
        raise typer.Exit(2) from err


async def call(awaitable: Awaitable[Any]) -> Any:
    """Await a gRPC call, turning its failure into the typed mesh error."""
    try:
        return await awaitable
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error(err) from err


def run_on_router(router: str, body: Callable[[grpc.aio.Channel], Awaitable[int]]) -> None:
    """Run one command's calls on a channel to the router and exit with the body's code.

    A failed call ends the command with code 1 and one line: unreachable, or the router's
    status and message. Ctrl-C ends it quietly (`events tail` runs until then).
    """

    async def main() -> int:
        async with open_channel(router) as channel:
            try:
                return await body(channel)
            except grpc.aio.AioRpcError as err:
                error = from_rpc_error(err)
                if err.code() in _UNREACHABLE:
                    err_console.print(f"[red]router {router} unreachable:[/] {error.message}")
                else:
                    err_console.print(f"[red]{err.code().name}:[/] {error.message}")
                return 1

    with contextlib.suppress(KeyboardInterrupt):
        raise typer.Exit(asyncio.run(main()))
