"""The mesh's nats-server takes only the router: mutual TLS with the mesh CA, routers only.

A real nats-server (and a three-node cluster, routes over TLS) configured the way the mesh
runs it; the event store and the pipeline's run store connect as the router, while a client
without a certificate, one without TLS, and one presenting a module's certificate are turned
away. The compose nodes' own entry point (`python -m services.kit.security.nats_node`) runs
such a node.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import nats
import pytest
from nats.errors import Error as NatsError

from router.bus.jetstream.connection import connect_nats, nats_tls_context
from router.bus.jetstream_store import JetStreamEventStore
from router.pipeline.kv_store import KvRunStore
from services.kit.events.client import build_envelope
from services.kit.security.ca import ensure_identities, identity_files
from services.kit.security.identity import ROUTER, Identity
from services.kit.security.nats_node import DEFAULT_NATS_NAME
from services.kit.security.tls import use_transport
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2
from tests.helpers.nats_cluster import NatsCluster
from tests.helpers.nats_server import (
    NatsServerProcess,
    NodeConfig,
    free_port,
    start_nats_server,
    wait_until_listening,
)
from tests.helpers.pki import add_modules, make_pki, transport_as

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from soulspot.events.v1 import envelope_pb2

CONNECT_TIMEOUT_S = 5.0


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    pki_dir = make_pki(tmp_path / "pki", modules=())
    add_modules(pki_dir, "library")
    return pki_dir


@pytest.fixture
def secure_nats(tmp_path: Path, pki: Path) -> Iterator[NatsServerProcess]:
    server = start_nats_server(tmp_path / "nats", pki_dir=pki)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def as_router(pki: Path) -> Iterator[None]:
    """This process is the router, with TLS, as the router's entry point makes it."""
    previous = use_transport(transport_as(pki, ROUTER))
    try:
        yield
    finally:
        use_transport(previous)


def _envelope(download_id: str) -> envelope_pb2.EventEnvelope:
    payload = download_pb2.DownloadStarted(
        download_id=download_id, track=references_pb2.TrackReference(title="t", artist="a")
    )
    return build_envelope(payload, source_module="folder")


async def _connect(url: str, **options: Any) -> None:
    nc = await nats.connect(
        servers=[url],
        allow_reconnect=False,
        max_reconnect_attempts=0,
        connect_timeout=CONNECT_TIMEOUT_S,
        **options,
    )
    await nc.close()


@pytest.mark.usefixtures("as_router")
async def test_the_event_store_and_the_run_store_connect_as_the_router(
    secure_nats: NatsServerProcess,
) -> None:
    store = JetStreamEventStore([secure_nats.url])
    await store.open()
    try:
        event = _envelope("d-1")
        (stored,) = await store.append([event], [None])
        read = await store.read_sequences([stored.sequence])
        assert [e.event_id for e in read] == [event.event_id]
    finally:
        await store.close()
    runs = KvRunStore([secure_nats.url], lease_s=5.0)
    await runs.open()
    try:
        assert await runs.list_runs() == []
    finally:
        await runs.close()


async def test_a_client_without_a_certificate_is_refused(
    secure_nats: NatsServerProcess, pki: Path
) -> None:
    # TLS that trusts the mesh CA, but presents no certificate of its own.
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    with pytest.raises((NatsError, OSError)):
        await _connect(secure_nats.url, tls=context)
    assert "client didn't provide a certificate" in secure_nats.log_path.read_text()


def test_a_client_without_tls_is_refused(secure_nats: NatsServerProcess) -> None:
    # Plain NATS protocol on a raw socket (nats-py itself would upgrade to TLS): the server
    # closes the connection without ever answering the PING.
    received = b""
    with socket.create_connection(("127.0.0.1", secure_nats.config.port), timeout=15) as sock:
        info = sock.recv(4096)
        assert b'"tls_required":true' in info
        sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        while chunk := sock.recv(4096):
            received += chunk
    assert b"PONG" not in received


async def test_a_module_certificate_is_refused(secure_nats: NatsServerProcess, pki: Path) -> None:
    module = transport_as(pki, Identity.module("library"))
    with pytest.raises(NatsError) as caught:
        await _connect(secure_nats.url, tls=nats_tls_context(module))
    assert "authorization violation" in str(caught.value).lower()


async def test_the_router_certificate_is_accepted_where_a_module_one_is_not(
    secure_nats: NatsServerProcess, pki: Path
) -> None:
    # The same client code, the router's files: the refusal above is about the identity.
    nc = await connect_nats(
        [secure_nats.url],
        transport=transport_as(pki, ROUTER),
        allow_reconnect=False,
        connect_timeout=CONNECT_TIMEOUT_S,
    )
    try:
        info = await nc.jetstream().account_info()
        assert info.limits is not None
    finally:
        await nc.close()


@pytest.mark.usefixtures("as_router")
async def test_a_cluster_routes_over_tls_and_serves_replicated_streams(
    tmp_path: Path, pki: Path
) -> None:
    with NatsCluster(tmp_path, pki_dir=pki) as cluster:
        # Three copies need the routes: JetStream places a replica on each node.
        # A generous request timeout: a replicated stream's creation waits for all three.
        store = JetStreamEventStore(cluster.urls, replicas=3, request_timeout_s=20.0)
        await store.open()
        try:
            (stored,) = await store.append([_envelope("d-cluster")], [None])
            assert stored.sequence == 1
        finally:
            await store.close()
        config = cluster.configs[0].config_path.read_text()
        assert "verify_and_map: true" in config
        assert identity_files(pki, Identity.nats("nats")).cert.is_file()


def _run_entry_point(tmp_path: Path, pki: Path) -> NatsServerProcess:
    """The command the compose `cluster` profile runs for a node, on loopback ports."""
    port, monitor = free_port(), free_port()
    log_path = tmp_path / "node.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.kit.security.nats_node",
                "--server-name=n1",
                f"--listen=127.0.0.1:{port}",
                f"--http=127.0.0.1:{monitor}",
                f"--store-dir={tmp_path / 'node'}",
                f"--pki-dir={pki}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    config = NodeConfig("n1", port, tmp_path / "node", tmp_path / "node" / "nats-server.conf")
    node = NatsServerProcess(config, popen, log_path)
    wait_until_listening(node)
    return node


@pytest.mark.usefixtures("as_router")
async def test_the_compose_nodes_entry_point_runs_a_node_that_takes_only_the_router(
    tmp_path: Path, pki: Path
) -> None:
    ensure_identities(pki, [Identity.nats(DEFAULT_NATS_NAME)])
    node = _run_entry_point(tmp_path, pki)
    try:
        nc = await connect_nats([node.url], allow_reconnect=False)
        try:
            assert (await nc.jetstream().account_info()).limits is not None
        finally:
            await nc.close()
        module = transport_as(pki, Identity.module("library"))
        with pytest.raises(NatsError) as caught:
            await _connect(node.url, tls=nats_tls_context(module))
        assert "authorization violation" in str(caught.value).lower()
    finally:
        node.stop()
