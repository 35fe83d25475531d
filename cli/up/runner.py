"""Running a planned stack as local processes: start, wait for health, watch, stop.

1. starts the processes in depends_on order (the router first), each in its own session
   with its output in <state>/logs/<service>.log, and waits until each answers its
   grpc.health.v1 check (SERVING; spotify and soulseek may answer NOT_SERVING when their
   backend is not configured: that is their healthy state);
2. prints where everything is, with each module's status and reason from the router
   (cli/up/summary.py), then reports any process that exits;
3. on Ctrl-C or SIGTERM stops them in reverse order: SIGTERM, a grace period, then SIGKILL
   for stragglers. On Linux each process is also tied to `up` (cli/up/pdeathsig.py): if `up`
   itself is killed (SIGKILL, a crash), they get SIGTERM instead of running on, orphaned.

A process that exits is reported, not restarted: its log says why, and the router routes
around a module that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from cli.up.logs import log_tail
from cli.up.plan import process_env
from cli.up.summary import print_summary, router_view
from services.kit.rpc.healthprobe import ProbeResult, probe

if TYPE_CHECKING:
    from collections.abc import Mapping

    from rich.console import Console

    from cli.up.plan import LocalProcess, StackPlan

STARTUP_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
# prctl(PR_SET_PDEATHSIG) is Linux only; elsewhere children are stopped by `up` alone.
TIE_TO_PARENT = sys.platform.startswith("linux")
PDEATHSIG_WRAPPER = Path(__file__).resolve().with_name("pdeathsig.py")


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


class StartupError(Exception):
    def __init__(self, proc: Running, why: str) -> None:
        super().__init__(f"{proc.spec.name}: {why}")
        self.proc = proc


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


async def _wait_exit(popen: subprocess.Popen[bytes], grace_s: float) -> bool:
    try:
        await asyncio.to_thread(popen.wait, grace_s)
    except subprocess.TimeoutExpired:
        return False
    return True


async def run_stack(
    plan: StackPlan,
    *,
    console: Console,
    environ: Mapping[str, str],
    startup_timeout: float = STARTUP_TIMEOUT_S,
) -> int:
    """Start the plan, print the summary, run until Ctrl-C or SIGTERM, stop; the exit code."""
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
        view = await router_view(plan, stack.running, console)
        print_summary(plan, stack.running, view, console)
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
