"""A SIGKILLed `soulspot up` takes its services with it (Linux: the parent-death signal),
and the wrapper that sets that signal never runs a command whose parent is already gone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.up.pdeathsig import PARENT_GONE
from cli.up.runner import PDEATHSIG_WRAPPER
from services.kit.rpc.healthprobe import probe
from tests.helpers.pki import transport_as
from tests.helpers.stack import alive, child_pids, free_offset

ROOT = Path(__file__).resolve().parents[3]
ROUTER_PORT, FOLDER_PORT = 50051, 50064
PORTS = (ROUTER_PORT, 8080, FOLDER_PORT)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only"),
]


@pytest.mark.timeout(90)
async def test_killed_up_leaves_no_orphans(tmp_path: Path) -> None:
    offset = free_offset(PORTS, 14_000, 14_900)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOULSPOT_")}
    out_path = tmp_path / "up.out"
    with out_path.open("wb") as out:
        up = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "cli.main", "up", "--only", "router,folder", "--no-sample"),
            *("--state-dir", str(tmp_path / "st"), "--port-offset", str(offset)),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        addresses = [f"127.0.0.1:{port + offset}" for port in (ROUTER_PORT, FOLDER_PORT)]
        # `up` creates the mesh's certificates first; the probe then speaks as the CLI.
        pki_dir = tmp_path / "st" / "state" / "pki"
        while True:
            assert up.returncode is None, out_path.read_text()
            children |= child_pids(up.pid)
            answers = []
            if (pki_dir / "client-cli.key").is_file():
                client = transport_as(pki_dir)
                answers = [
                    await probe(address, deadline_s=1.0, transport=client) for address in addresses
                ]
            if answers and all(answer.answered for answer in answers):
                break
            assert time.monotonic() < deadline, f"{answers}\n{out_path.read_text()}"
            await asyncio.sleep(0.2)
        children |= child_pids(up.pid)
        assert len(children) == 2, children  # the router and the folder module
        assert all(alive(pid) for pid in children)

        up.kill()  # SIGKILL: `up` gets no chance to stop anything itself
        await up.wait()
        deadline = time.monotonic() + 8  # each service's graceful stop is at most 5 s
        while left := [pid for pid in children if alive(pid)]:
            assert time.monotonic() < deadline, (
                f"orphans still running: {left}\n{out_path.read_text()}"
            )
            await asyncio.sleep(0.1)
    finally:
        if up.returncode is None:
            up.kill()
            await up.wait()
        for pid in children:  # only what this test started, so a failure leaks nothing
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_wrapper_refuses_when_the_parent_is_already_gone(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    # A parent pid that is not ours stands for "reparented before prctl ran".
    wrapper = [sys.executable, "-I", "-S", str(PDEATHSIG_WRAPPER)]
    gone = subprocess.run([*wrapper, str(os.getpid() + 1_000_000), "--", *command], check=False)
    assert gone.returncode == PARENT_GONE
    assert not marker.exists()
    # With the real parent the command runs, in the wrapper's place.
    ran = subprocess.run([*wrapper, str(os.getpid()), "--", *command], check=False)
    assert ran.returncode == 0
    assert marker.exists()
