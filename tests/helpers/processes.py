"""Start the router and fake modules (`tests.helpers.fake_module`) as real processes on
loopback, speaking mutual TLS with certificates of a CA in the router's folder."""

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
from typing import IO, TYPE_CHECKING

from tests.helpers.fake_module import DEFAULT_CAPABILITIES
from tests.helpers.pki import add_modules, make_pki, tls_env, transport_as, write_policy

if TYPE_CHECKING:
    from services.kit.security.tls import Transport

# The fake module runs as `-m tests.helpers.fake_module`, so from the repository root.
REPO = Path(__file__).resolve().parents[2]
# Each router's PKI folder by its address: modules started for it get certificates there.
_PKI_BY_ROUTER: dict[str, Path] = {}
# The fake modules the tests start: the router's policy grants each of them what it serves
# (a router grants registration by verified identity, and these are not the mesh's modules).
FAKE_MODULES = (
    "k-primary",
    "k-backup",
    "h-hang",
    "h-ok",
    "i-strict",
    "i-lenient",
    "g-ok",
    "t-fake",
)


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
    # The mesh's certificates; `client` speaks to the process as the command line.
    pki_dir: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client(self) -> Transport:
        assert self.pki_dir is not None, "a plaintext process"
        return transport_as(self.pki_dir)

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
    pki_dir = make_pki(tmp / "pki", modules=())
    _PKI_BY_ROUTER[f"127.0.0.1:{port}"] = pki_dir
    environment = {
        **os.environ,
        "SOULSPOT_ROUTER__ADDRESS": f"127.0.0.1:{port}",
        "SOULSPOT_STATE_DIR": str(tmp / "state"),
        "SOULSPOT_LOG_LEVEL": "INFO",
        **tls_env(pki_dir),
        **write_policy(tmp / "policy.yaml", dict.fromkeys(FAKE_MODULES, DEFAULT_CAPABILITIES)),
        **env,
    }
    environment.pop("SOULSPOT_CONFIG", None)
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "router"], stdout=log, stderr=log, env=environment
        )
    return Process("router", popen, log_path, port, pki_dir)


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
    # Several routers (comma-separated) share one mesh CA: the first one's folder.
    pki_dir = _PKI_BY_ROUTER[router.split(",")[0]]
    add_modules(pki_dir, name)
    environment = {k: v for k, v in os.environ.items() if k != "SOULSPOT_CONFIG"}
    environment.update(tls_env(pki_dir))
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
            env=environment,
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
    return Process(name, popen, log_path, port, pki_dir)
