"""A three-node nats-server cluster with JetStream on loopback, for tests that need NATS to
survive a node's death: cluster routes between the nodes, a server name and a store folder
each, kill -9 of one node and its restart with the same name, ports and store.

    with NatsCluster(tmp_path) as cluster:
        servers = cluster.client_urls          # every node's nats:// URL, for any client
        cluster.kill(1)                        # kill -9 of the second node
        cluster.restart(1)                     # same name, ports and store; waits until ready

Each node is `tests.helpers.nats_server`'s one-node configuration with the cluster's routes;
`NatsCluster(tmp_path, pki_dir=...)` makes them the mesh's (mutual TLS on client ports and
routes, routers only), as routers started with that PKI need.
"""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Self

from tests.helpers.nats_server import (
    NatsServerProcess,
    NodeConfig,
    node_config,
    start_node,
)

if TYPE_CHECKING:
    from pathlib import Path

CLUSTER_NAME = "soulspot"
READY_DEADLINE_S = 30.0


def _distinct_ports(count: int) -> list[int]:
    """`count` free loopback ports, all different: each socket stays bound until every port
    is chosen (free_port one at a time may hand out a port twice)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _healthy(monitor_port: int) -> bool:
    """Whether the node's /healthz answers 200: listening, and JetStream current with the
    cluster's meta leader (a plain socket check passes long before that)."""
    url = f"http://127.0.0.1:{monitor_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=1.0) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class NatsCluster:
    """`size` nats-server processes routed to each other, JetStream on each."""

    def __init__(
        self, tmp: Path, size: int = 3, *, sync_always: bool = True, pki_dir: Path | None = None
    ) -> None:
        folder = tmp / "nats"
        chosen = _distinct_ports(3 * size)
        ports = [(chosen[3 * i], chosen[3 * i + 1]) for i in range(size)]
        self.configs: list[NodeConfig] = [
            node_config(
                folder / f"n{index}",
                name=f"n{index}",
                port=client_port,
                sync_always=sync_always,
                cluster_name=CLUSTER_NAME if size > 1 else "",
                cluster_port=cluster_port,
                routes=[p for i, (_c, p) in enumerate(ports) if i != index],
                pki_dir=pki_dir,
            )
            for index, (client_port, cluster_port) in enumerate(ports)
        ]
        # A monitoring port per node, for the health check (sync: tests may call it from
        # inside their event loop).
        self.monitor_ports = [chosen[3 * i + 2] for i in range(size)]
        for config, monitor_port in zip(self.configs, self.monitor_ports, strict=True):
            with config.config_path.open("a") as conf:
                conf.write(f'http: "127.0.0.1:{monitor_port}"\n')
        self.nodes: list[NatsServerProcess | None] = [None] * size

    @property
    def urls(self) -> list[str]:
        return [config.url for config in self.configs]

    @property
    def client_urls(self) -> str:
        """Every node's client URL, comma-separated."""
        return ",".join(self.urls)

    def start(self) -> None:
        for index in range(len(self.configs)):
            self.nodes[index] = start_node(self.configs[index], wait=False)
        self.wait_ready(range(len(self.configs)))

    def wait_ready(self, indices: range | list[int]) -> None:
        """Until each given node answers JetStream requests (the cluster elected its meta
        leader and the node knows it)."""
        deadline = time.monotonic() + READY_DEADLINE_S
        for index in indices:
            node = self.nodes[index]
            assert node is not None
            while not _healthy(self.monitor_ports[index]):
                if node.popen.poll() is not None:
                    raise RuntimeError(f"nats node {node.config.name} exited: {node.log_path}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nats node {node.config.name} not ready: {node.log_path}")
                time.sleep(0.1)

    def kill(self, index: int) -> None:
        """kill -9 of one node: no goodbye to its routes or its clients."""
        node = self.nodes[index]
        if node is not None:
            node.kill()

    def restart(self, index: int) -> None:
        """Start a killed node again with its name, ports and store; waits until it answers."""
        node = self.nodes[index]
        if node is not None and node.popen.poll() is None:
            raise RuntimeError(f"nats node {node.config.name} is still running")
        self.nodes[index] = start_node(self.configs[index], wait=False)
        self.wait_ready([index])

    def stop(self) -> None:
        for node in self.nodes:
            if node is not None:
                node.stop()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
