"""The process side of `soulspot up`: sample audio, log reasons, ordered stop with SIGKILL."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console

from cli.stack import LocalProcess, StackPlan, find_compose_file, load_compose, plan_stack
from cli.up import StackRun, ensure_sample_source, log_tail, logged_reason, prepare_folders

if TYPE_CHECKING:
    from pathlib import Path


def _plan(tmp_path: Path, environ: dict[str, str] | None = None) -> StackPlan:
    compose = load_compose(find_compose_file())
    return plan_stack(compose, tmp_path / "st", environ=environ or {}, only=["folder"])


def test_sample_audio_fills_our_empty_source_once(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    prepare_folders(plan)
    made = ensure_sample_source(plan, enabled=True)
    assert made is not None
    source, count = made
    assert source == plan.state_dir / "source"
    files = sorted(p for p in source.rglob("*") if p.is_file())
    assert len(files) == count > 0
    assert {p.suffix for p in files} <= {".flac", ".mp3", ".wav"}
    # A second start leaves the folder as it is.
    assert ensure_sample_source(plan, enabled=True) is None
    assert sorted(p for p in source.rglob("*") if p.is_file()) == files


def test_no_sample_and_user_sources_are_left_alone(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    assert ensure_sample_source(plan, enabled=False) is None
    assert not (plan.state_dir / "source").exists()
    own = _plan(tmp_path, {"SOULSPOT_FOLDER__SOURCE_DIR": str(tmp_path / "music")})
    assert ensure_sample_source(own, enabled=True) is None
    assert not (tmp_path / "music").exists()


def test_logged_reason_is_the_last_not_serving(tmp_path: Path) -> None:
    log = tmp_path / "m.log"
    lines = [
        "plain text line",
        json.dumps({"msg": "not serving", "status": "NOT_SERVING", "reason": "old"}),
        json.dumps({"msg": "not serving", "status": "NOT_SERVING", "reason": "no credentials"}),
        '{"broken json "reason"',
    ]
    log.write_text("\n".join(lines) + "\n")
    assert logged_reason(log) == "no credentials"
    with log.open("a") as f:
        f.write(json.dumps({"msg": "serving", "reason": ""}) + "\n")
    assert logged_reason(log) == ""
    assert logged_reason(tmp_path / "missing.log") == ""
    assert log_tail(log, 1) == json.dumps({"msg": "serving", "reason": ""})


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
