"""`soulspot up`: the whole stack as local processes, from docker-compose.yml.

Reads the compose file into a plan (cli/up/plan.py), makes the local folders and, without a
configured source folder, fills <state>/source with generated, tagged sample audio so
`soulspot get` works offline on a fresh machine (cli/up/folders.py), creates the mesh CA and
a certificate for the router, the command line and each module in <state>/state/pki
(cli/up/pki.py), then runs the plan until Ctrl-C or SIGTERM (cli/up/runner.py).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
import yaml

from cli.console import console
from cli.router_connection import pki_dir_option
from cli.up.folders import ensure_sample_source, prepare_folders
from cli.up.pki import PKI_DIR_ENV, ensure_stack_pki, stack_tls
from cli.up.plan import (
    ComposeError,
    find_compose_file,
    load_compose,
    plan_stack,
    read_config_file,
)
from cli.up.runner import STARTUP_TIMEOUT_S, run_stack
from services.kit.security.identity import CLI
from services.kit.security.tls import transport_for, use_transport

DEFAULT_STATE_DIR = Path(".soulspot")


def up(
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="folder for state, library, logs, sample audio")
    ] = DEFAULT_STATE_DIR,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="run only these services (repeat, or comma-separated)"),
    ] = None,
    no_sample: Annotated[
        bool, typer.Option("--no-sample", help="do not generate sample audio for the folder")
    ] = False,
    port_offset: Annotated[
        int, typer.Option("--port-offset", help="add this to every port (a second stack)")
    ] = 0,
    compose_file: Annotated[
        Path | None, typer.Option("--compose-file", help="default: the project's")
    ] = None,
    startup_timeout: Annotated[
        float, typer.Option("--startup-timeout", help="seconds each service may take to start")
    ] = STARTUP_TIMEOUT_S,
) -> None:
    """Run the router and every module locally, as docker-compose.yml describes them."""
    environ = dict(os.environ)
    pki_option = pki_dir_option()
    if pki_option is not None:
        # `soulspot --pki-dir DIR up`: every process of the stack uses that folder.
        environ[PKI_DIR_ENV] = str(pki_option.resolve())
    names = [n.strip() for item in only or [] for n in item.split(",") if n.strip()]
    try:
        path = compose_file or find_compose_file()
        plan = plan_stack(
            load_compose(path),
            state_dir,
            environ=environ,
            only=names,
            port_offset=port_offset,
            config_data=read_config_file(environ),
        )
    except (ComposeError, FileNotFoundError, yaml.YAMLError) as err:
        console.print(f"[red]soulspot up:[/] {err}")
        raise typer.Exit(2) from err
    if not plan.processes:
        console.print("[red]soulspot up:[/] nothing to run")
        raise typer.Exit(2)
    prepare_folders(plan)
    try:
        tls = stack_tls(plan, environ)
        pki_dir = ensure_stack_pki(plan, tls)
    except (OSError, ValueError) as err:
        console.print(f"[red]soulspot up:[/] cannot create the mesh's certificates: {err}")
        raise typer.Exit(1) from err
    if pki_dir is not None:
        console.print(f"certificates: {pki_dir}")
    # Health probes and the summary speak to the stack as the command line.
    use_transport(transport_for(CLI, tls, plan.state_dir))
    sample = ensure_sample_source(plan, enabled=not no_sample)
    if sample is not None:
        console.print(f"sample audio: {sample[1]} tagged files in {sample[0]}")
    console.print(f"services from {path}; logs in {plan.state_dir / 'logs'}")
    code = asyncio.run(
        run_stack(plan, console=console, environ=environ, startup_timeout=startup_timeout)
    )
    if code:
        raise typer.Exit(code)
