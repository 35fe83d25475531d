"""`soulspot up`: the whole stack as local processes, from docker-compose.yml.

cli/stack.py turns the compose services into a plan (commands, environment, loopback
addresses, folders under the state folder); this module runs it:

1. without a configured source folder, fills <state>/source with generated, tagged sample
   audio so `soulspot get` works offline on a fresh machine;
2. starts the processes in depends_on order (the router first), each in its own session
   with its output in <state>/logs/<service>.log, and waits until each answers its
   grpc.health.v1 check (SERVING; spotify and soulseek may answer NOT_SERVING when their
   backend is not configured: that is their healthy state);
3. prints where everything is, with each module's status and reason from the router;
4. on Ctrl-C or SIGTERM stops them in reverse order: SIGTERM, a grace period, then SIGKILL
   for stragglers. On Linux each process is also tied to `up` (cli/pdeathsig.py): if `up`
   itself is killed (SIGKILL, a crash), they get SIGTERM instead of running on, orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from cli.stack import (
    CONFIG_ENV,
    ComposeError,
    LocalProcess,
    StackPlan,
    find_compose_file,
    load_compose,
    plan_stack,
    process_env,
    router_http_address,
)
from services.kit.rpc.healthprobe import ProbeResult, probe

if TYPE_CHECKING:
    from collections.abc import Mapping

SOURCE_DIR_ENV = "SOULSPOT_FOLDER__SOURCE_DIR"
DEFAULT_STATE_DIR = Path(".soulspot")
STARTUP_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
# How long to wait for started modules to show up in the router's status (registration is
# asynchronous to the module's own health).
REGISTRATION_WAIT_S = 10.0
LOG_TAIL_LINES = 20
# prctl(PR_SET_PDEATHSIG) is Linux only; elsewhere children are stopped by `up` alone.
TIE_TO_PARENT = sys.platform.startswith("linux")
PDEATHSIG_WRAPPER = Path(__file__).resolve().with_name("pdeathsig.py")

_STATUS_NAMES = {0: "unknown", 1: "active", 2: "inactive", 3: "degraded", 4: "unknown"}


@dataclass
class Running:
    """A started process of the plan."""

    spec: LocalProcess
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    health: ProbeResult | None = None
    reported_exit: bool = False

    @property
    def exited(self) -> bool:
        return self.popen.poll() is not None


@dataclass
class ModuleView:
    status: str
    reason: str = ""
    address: str = ""


@dataclass
class StackRun:
    plan: StackPlan
    console: Console
    environ: Mapping[str, str]
    startup_timeout: float = STARTUP_TIMEOUT_S
    stop_grace: float = STOP_GRACE_S
    running: list[Running] = field(default_factory=list)

    @property
    def logs_dir(self) -> Path:
        return self.plan.state_dir / "logs"

    # -- starting -----------------------------------------------------------------------------

    def start(self, spec: LocalProcess) -> Running:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{spec.name}.log"
        log_file = log_path.open("ab")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        log_file.write(f"--- {stamp} soulspot up: {' '.join(spec.argv)}\n".encode())
        log_file.flush()
        popen = subprocess.Popen(
            launch_argv(spec.argv),
            env=process_env(self.environ, spec),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Its own session: a terminal's Ctrl-C reaches `up` only, which then stops the
            # processes in order instead of all of them dying at once.
            start_new_session=True,
        )
        proc = Running(spec, popen, log_path, log_file)
        self.running.append(proc)
        return proc

    async def wait_started(self, proc: Running) -> None:
        """Until the process answers its health check as it should; raises StartupError."""
        spec = proc.spec
        if spec.health_address is None:
            return
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if proc.exited:
                raise StartupError(proc, f"exited with code {proc.popen.returncode}")
            proc.health = await probe(spec.health_address, deadline_s=1.0)
            if proc.health.ok(serving_or_not=spec.serving_or_not):
                return
            if time.monotonic() > deadline:
                if proc.health.answered:
                    # Running but not serving (a backend it cannot use): the router routes
                    # around it and the table shows why; not a reason to stop the stack.
                    return
                raise StartupError(
                    proc,
                    f"no health answer at {spec.health_address} after {self.startup_timeout:.0f}"
                    f" s ({proc.health.error})",
                )
            await asyncio.sleep(0.2)

    async def start_all(self) -> None:
        for level in self.plan.levels():
            procs = [self.start(spec) for spec in level]
            names = ", ".join(p.spec.name for p in procs)
            with self.console.status(f"starting {names}"):
                await asyncio.gather(*(self.wait_started(p) for p in procs))
            for p in procs:
                self.console.print(f"  [green]started[/] {p.spec.name} (pid {p.popen.pid})")

    # -- status -------------------------------------------------------------------------------

    async def router_view(self) -> dict[str, ModuleView] | None:
        """Each module's status and reason as the router sees them, None without a router."""
        router = self.plan.router
        if router is None or router.address is None:
            return None
        from services.kit.rpc.channel import open_channel
        from soulspot.router.v1 import router_pb2, status_pb2_grpc

        expected = {p.spec.name for p in self.running if not p.spec.is_router}
        deadline = time.monotonic() + REGISTRATION_WAIT_S
        view: dict[str, ModuleView] | None = None
        async with open_channel(router.address) as channel:
            stub = status_pb2_grpc.StatusServiceStub(channel)
            while True:
                try:
                    reply = await stub.GetStatus(router_pb2.GetStatusRequest(), timeout=2.0)
                except Exception as err:  # any RPC failure: show the table without it
                    self.console.print(f"[yellow]router status unavailable:[/] {err}")
                    return view
                view = {
                    m.name: ModuleView(_STATUS_NAMES.get(m.status, "unknown"), m.reason, m.address)
                    for m in reply.modules
                }
                settled = all(name in view and view[name].status != "unknown" for name in expected)
                if settled or time.monotonic() > deadline:
                    return view
                await asyncio.sleep(0.25)

    def table(self, view: dict[str, ModuleView] | None) -> Table:
        table = Table(title="SoulSpot mesh", title_justify="left")
        table.add_column("service", no_wrap=True)
        table.add_column("address", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("reason")
        for proc in self.running:
            spec = proc.spec
            status, reason = _own_status(proc)
            if view is not None and not spec.is_router:
                seen = view.get(spec.name)
                if seen is None:
                    status, reason = "unregistered", "not (yet) registered with the router"
                else:
                    status, reason = seen.status, seen.reason
                    if status != "active":
                        # grpc.health carries no reason, so the router's is generic; the
                        # module logged its own.
                        reason = logged_reason(proc.log_path) or reason
            style = {"active": "green", "serving": "green"}.get(status, "yellow")
            table.add_row(spec.name, spec.address or "-", f"[{style}]{status}[/]", reason)
        return table

    def print_summary(self, view: dict[str, ModuleView] | None) -> None:
        self.console.print(self.table(view))
        router = self.plan.router
        if router is not None and router.address:
            self.console.print(f"router     {router.address}   (SOULSPOT_ROUTER_ADDRESS)")
        http = router_http_address(self.plan)
        if http:
            self.console.print(f"dashboard  http://{http}")
        self.console.print(f"state      {self.plan.state_dir}")
        self.console.print(f"logs       {self.logs_dir}/<service>.log")
        self.console.print("Ctrl-C stops everything.")

    # -- running and stopping -----------------------------------------------------------------

    def report_exits(self) -> None:
        for proc in self.running:
            if proc.exited and not proc.reported_exit:
                proc.reported_exit = True
                self.console.print(
                    f"[red]{proc.spec.name} exited[/] with code {proc.popen.returncode};"
                    f" see {proc.log_path}"
                )

    async def stop_all(self) -> None:
        """Reverse start order: SIGTERM a level, wait up to the grace period, SIGKILL."""
        by_name = {p.spec.name: p for p in self.running}
        for level in reversed(self.plan.levels()):
            procs = [by_name[s.name] for s in level if s.name in by_name]
            for proc in procs:
                if not proc.exited:
                    with contextlib.suppress(ProcessLookupError):
                        proc.popen.send_signal(signal.SIGTERM)
            await asyncio.gather(*(_wait_exit(p.popen, self.stop_grace) for p in procs))
            for proc in procs:
                if not proc.exited:
                    self.console.print(f"[yellow]{proc.spec.name} ignored SIGTERM: killing[/]")
                    with contextlib.suppress(ProcessLookupError):
                        proc.popen.kill()
                    await asyncio.to_thread(proc.popen.wait)
        for proc in self.running:
            proc.log_file.close()


def launch_argv(argv: list[str], *, tie_to_parent: bool = TIE_TO_PARENT) -> list[str]:
    """The command that starts argv, on Linux through the parent-death-signal wrapper.

    The wrapper (not a preexec_fn, which is unsafe in a process with threads: see its
    docstring) sets PR_SET_PDEATHSIG and execs argv, so the pid stays the service's. The
    signal is tied to the *thread* that forks: StackRun.start runs on the event loop's
    thread, which lives as long as `up` does.
    """
    if not tie_to_parent:
        return list(argv)
    # -I -S: a bare, fast interpreter; the wrapper needs only the standard library.
    wrapper = [sys.executable, "-I", "-S", str(PDEATHSIG_WRAPPER), str(os.getpid()), "--"]
    return [*wrapper, *argv]


class StartupError(Exception):
    def __init__(self, proc: Running, why: str) -> None:
        super().__init__(f"{proc.spec.name}: {why}")
        self.proc = proc


async def _wait_exit(popen: subprocess.Popen[bytes], grace_s: float) -> bool:
    try:
        await asyncio.to_thread(popen.wait, grace_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def _own_status(proc: Running) -> tuple[str, str]:
    if proc.exited:
        return "exited", f"code {proc.popen.returncode}"
    if proc.health is None:
        return "running", ""
    if proc.health.serving:
        return "serving", ""
    return (proc.health.status or "no answer").lower(), proc.health.error


def logged_reason(path: Path, *, max_bytes: int = 256 * 1024) -> str:
    """The reason of the last NOT_SERVING a module logged (kit JSON log lines), or ""."""
    try:
        with path.open("rb") as log_file:
            size = log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, size - max_bytes))
            lines = log_file.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if '"reason"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("status") == "NOT_SERVING":
            return str(record.get("reason") or "")
        if isinstance(record, dict) and record.get("msg") == "serving":
            return ""
    return ""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# Sample audio


def ensure_sample_source(plan: StackPlan, *, enabled: bool) -> tuple[Path, int] | None:
    """Fill the folder module's source with sample audio when it is ours and empty.

    Ours means the plan put it under the state folder (the user configured no source of their
    own); a folder that holds any file is left alone. Returns (folder, files written).
    """
    folder_proc = next((p for p in plan.processes if SOURCE_DIR_ENV in p.env), None)
    if not enabled or folder_proc is None:
        return None
    source = Path(folder_proc.env[SOURCE_DIR_ENV])
    if not source.resolve().is_relative_to(plan.state_dir):
        return None
    if source.is_dir() and any(p.is_file() for p in source.rglob("*")):
        return None
    from services.kit.testing.sample_audio import DEFAULT_SAMPLE_TRACKS, make_sample_library

    written = make_sample_library(source, DEFAULT_SAMPLE_TRACKS)
    return source, len(written)


def prepare_folders(plan: StackPlan) -> None:
    for target in plan.used_mounts:
        plan.mounts[target].mkdir(parents=True, exist_ok=True)
    (plan.state_dir / "logs").mkdir(parents=True, exist_ok=True)


def read_config_file(environ: Mapping[str, str]) -> Any:
    name = environ.get(CONFIG_ENV)
    if not name:
        return None
    path = Path(name)
    if not path.is_file():
        raise ComposeError(f"{CONFIG_ENV}={name}: no such file")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# The command


async def run_stack(
    plan: StackPlan,
    *,
    console: Console,
    environ: Mapping[str, str],
    startup_timeout: float = STARTUP_TIMEOUT_S,
) -> int:
    stack = StackRun(plan, console, environ, startup_timeout=startup_timeout)
    router = plan.router
    if router is not None and router.health_address is not None:
        already = await probe(router.health_address, deadline_s=0.5)
        if already.answered:
            console.print(
                f"[red]something already answers at {router.health_address}[/]: another stack?"
                " Stop it, or use --port-offset."
            )
            return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.ensure_future(stack.start_all())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StartupError):
                await starting
            console.print("stopping (interrupted during start-up)")
            return 130
        try:
            starting.result()
        except StartupError as err:
            console.print(f"[red]{err}[/]")
            tail = log_tail(err.proc.log_path)
            if tail:
                console.print(f"last lines of {err.proc.log_path}:", markup=False)
                console.print(tail, markup=False, highlight=False, soft_wrap=True)
            return 1
        stack.print_summary(await stack.router_view())
        while not stop.is_set():
            stack.report_exits()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        console.print("stopping")
        return 0
    finally:
        stopping.cancel()
        await stack.stop_all()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


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
    console = Console()
    environ = dict(os.environ)
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
    sample = ensure_sample_source(plan, enabled=not no_sample)
    if sample is not None:
        console.print(f"sample audio: {sample[1]} tagged files in {sample[0]}")
    console.print(f"services from {path}; logs in {plan.state_dir / 'logs'}")
    code = asyncio.run(
        run_stack(plan, console=console, environ=environ, startup_timeout=startup_timeout)
    )
    if code:
        raise typer.Exit(code)


if __name__ == "__main__":
    typer.run(up)
