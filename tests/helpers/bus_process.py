"""A real router process (`python -m router`) for the bus's end-to-end tests, speaking mutual
TLS with certificates of a CA in its state folder; `client` is how a test speaks to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from services.kit.rpc.channel import wait_for_ready
from tests.helpers.pki import make_pki, tls_env, transport_as, write_policy

if TYPE_CHECKING:
    from services.kit.security.tls import Transport

REPO = Path(__file__).resolve().parents[2]


def _spawn(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "router"], cwd=REPO, env=env, stdout=log, stderr=log
        )


def _free_port() -> int:
    # Chosen once and kept: a restarted router must come back at the address clients hold.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class BusProcess:
    """Starts, kills (-9) and restarts the bus process on one state dir and one port."""

    def __init__(self, state_dir: Path, **bus_env: str) -> None:
        self.state_dir = state_dir
        self.port = _free_port()
        self.bus_env = bus_env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir / "router.log"
        # The router, the command line, and soulseek for tests that publish as a module.
        self.pki_dir = make_pki(state_dir / "pki", modules=("soulseek",))
        self.client: Transport = transport_as(self.pki_dir)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = dict(os.environ)
        env.update(
            {
                "SOULSPOT_STATE_DIR": str(self.state_dir),
                "SOULSPOT_ROUTER__ADDRESS": self.address,
                "SOULSPOT_ROUTER__HTTP_ADDRESS": "off",
                "SOULSPOT_LOG_LEVEL": "WARNING",
                "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "gen")]),
                **tls_env(self.pki_dir),
                # The test publishes every event type itself, as the command line.
                **write_policy(self.state_dir / "policy.yaml"),
            }
        )
        env.update({f"SOULSPOT_BUS__{k.upper()}": v for k, v in self.bus_env.items()})
        self.proc = _spawn(env, self.log_path)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited: {self.log_path.read_text()[-2000:]}")
            try:
                await wait_for_ready(self.address, 0.5, transport=self.client)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise TimeoutError("router did not start") from None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
