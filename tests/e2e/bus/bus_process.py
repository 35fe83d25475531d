"""A real `python -m router.bus` process for the bus's end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _spawn(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "router.bus"], cwd=REPO, env=env, stdout=log, stderr=log
        )


class BusProcess:
    """Starts, kills (-9) and restarts the bus process on one state dir and one port."""

    def __init__(self, state_dir: Path, **bus_env: str) -> None:
        self.state_dir = state_dir
        self.port = 0
        self.bus_env = bus_env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir / "router.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        port_file = self.state_dir / "port"
        port_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env.update(
            {
                "SOULSPOT_STATE_DIR": str(self.state_dir),
                "SOULSPOT_ROUTER__ADDRESS": f"127.0.0.1:{self.port}",
                "SOULSPOT_BUS_PORT_FILE": str(port_file),
                "SOULSPOT_LOG_LEVEL": "WARNING",
                "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "gen")]),
            }
        )
        env.update({f"SOULSPOT_BUS__{k.upper()}": v for k, v in self.bus_env.items()})
        self.proc = _spawn(env, self.log_path)
        deadline = time.monotonic() + 20
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"bus exited: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("bus did not start")
            await asyncio.sleep(0.05)
        self.port = int(port_file.read_text())

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
