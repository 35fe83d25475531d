"""Start the router and fake modules (`tests.helpers.fake_module`) as real processes on
loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# The fake module runs as `-m tests.helpers.fake_module`, so from the repository root.
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def kill(self) -> None:
        """kill -9: no goodbye, no graceful shutdown."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(5)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


def _wait_ready(popen: subprocess.Popen[bytes], out: IO[bytes], timeout: float) -> int:
    """The port from the process's `READY <port>` line."""
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        line = out.readline()
        if line.startswith(b"READY "):
            return int(line.split()[1])
        if not line and popen.poll() is not None:
            raise RuntimeError(f"process exited with {popen.returncode}")
    raise TimeoutError("process did not get ready")


def start_router(tmp: Path, port: int, **env: str) -> Process:
    log_path = tmp / f"router-{port}.log"
    environment = {
        **os.environ,
        "SOULSPOT_ROUTER__ADDRESS": f"127.0.0.1:{port}",
        "SOULSPOT_STATE_DIR": str(tmp / "state"),
        "SOULSPOT_LOG_LEVEL": "INFO",
        **env,
    }
    environment.pop("SOULSPOT_CONFIG", None)
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "router"], stdout=log, stderr=log, env=environment
        )
    return Process("router", popen, log_path, port)


def start_module(
    tmp: Path,
    name: str,
    router: str,
    *,
    priority: int = 0,
    behaviour: str = "answer",
    code: str = "UNAVAILABLE",
    log_level: str = "INFO",
) -> Process:
    log_path = tmp / f"{name}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.helpers.fake_module",
                f"--name={name}",
                f"--priority={priority}",
                f"--router={router}",
                f"--behaviour={behaviour}",
                f"--code={code}",
                f"--log-level={log_level}",
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO,
            env={k: v for k, v in os.environ.items() if k != "SOULSPOT_CONFIG"},
        )
    assert popen.stdout is not None
    try:
        port = _wait_ready(popen, popen.stdout, 20)
    except BaseException:
        popen.kill()
        popen.wait(5)
        raise
    finally:
        # The module prints nothing after READY (its logs go to stderr).
        popen.stdout.close()
    return Process(name, popen, log_path, port)
