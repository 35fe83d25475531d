"""The process side of `soulspot up` (cli/up/runner.py): ordered stop with SIGKILL for what
ignores SIGTERM, and the parent-death wrapper in front of every command on Linux."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console

from cli.up.plan import LocalProcess, StackPlan
from cli.up.runner import PDEATHSIG_WRAPPER, StackRun, launch_argv

if TYPE_CHECKING:
    from pathlib import Path


def test_launch_goes_through_the_wrapper_only_when_tied_to_the_parent() -> None:
    argv = ["python", "-m", "router"]
    assert launch_argv(argv, tie_to_parent=False) == argv
    tied = launch_argv(argv, tie_to_parent=True)
    assert tied[-4:] == ["--", *argv]
    assert str(PDEATHSIG_WRAPPER) in tied
    assert PDEATHSIG_WRAPPER.is_file()


async def test_stop_sends_sigterm_then_kills_what_ignores_it(tmp_path: Path) -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print('ready', flush=True); time.sleep(60)"
    )
    polite = "import time; print('ready', flush=True); time.sleep(60)"
    procs = [
        LocalProcess("first", [sys.executable, "-c", polite], {}, None, False),
        LocalProcess("second", [sys.executable, "-c", stubborn], {}, None, False, ["first"]),
    ]
    plan = StackPlan(tmp_path, procs, {}, {})
    console_out = io.StringIO()
    run = StackRun(plan, Console(file=console_out), {}, stop_grace=0.5)
    await run.start_all()
    deadline = time.monotonic() + 20
    # The log's first line repeats the command (which names the marker): look for the line.
    while not all("ready" in r.log_path.read_text().splitlines()[1:] for r in run.running):
        assert time.monotonic() < deadline, "processes did not start"
        await asyncio.sleep(0.05)
    await run.stop_all()
    first, second = run.running
    assert first.popen.returncode == -15  # SIGTERM was enough
    assert second.popen.returncode == -9  # ignored SIGTERM: killed after the grace period
    assert "second ignored SIGTERM" in console_out.getvalue()
