"""Mutual TLS between real grpc.aio peers: the server learns who calls; strangers get nowhere."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.kit.rpc.channel import HEALTH_CHECK_METHOD, check_health, open_channel
from services.kit.rpc.server import KitServer
from services.kit.security import tls
from services.kit.security.ca import ensure_identities
from services.kit.security.identity import CLI, ROUTER, Identity, peer_identity
from services.kit.security.tls import TlsSection, Transport, transport_for, use_transport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


class _WhoAmI(health_pb2_grpc.HealthServicer):
    """Answers a health check with the caller's verified identity in the trailing metadata."""

    async def Check(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> health_pb2.HealthCheckResponse:
        who = peer_identity(context)
        context.set_trailing_metadata((("x-peer", who.uri if who else "anonymous"),))
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
async def secure_server(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    pki = tmp_path / "pki"
    ensure_identities(pki, [ROUTER, CLI, Identity.module("library")])
    transport = transport_for(ROUTER, TlsSection(pki_dir=pki), tmp_path)
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(_WhoAmI(), server)
    creds = transport.server_credentials()
    assert creds is not None
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    yield port, pki
    await server.stop(0)


async def _who(port: int, creds: grpc.ChannelCredentials, host: str = "127.0.0.1") -> str:
    async with grpc.aio.secure_channel(f"{host}:{port}", creds) as channel:
        # A raw multicallable: the health stub's published type stubs have no methods.
        check = channel.unary_unary(
            HEALTH_CHECK_METHOD,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        call = check(health_pb2.HealthCheckRequest(), timeout=5)
        await call
        trailing = await call.trailing_metadata()
        assert trailing is not None
        return str(dict(trailing)["x-peer"])


async def test_the_server_reads_the_callers_identity_from_its_certificate(
    secure_server: tuple[int, Path], tmp_path: Path
) -> None:
    port, pki = secure_server
    for identity in (CLI, Identity.module("library")):
        creds = transport_for(identity, TlsSection(pki_dir=pki), tmp_path).channel_credentials()
        assert creds is not None
        assert await _who(port, creds) == identity.uri
        assert await _who(port, creds, host="localhost") == identity.uri


async def test_a_caller_without_a_mesh_certificate_is_refused(
    secure_server: tuple[int, Path], tmp_path: Path
) -> None:
    port, pki = secure_server
    ca = (pki / "ca.crt").read_bytes()
    with pytest.raises(grpc.aio.AioRpcError) as no_cert:
        await _who(port, grpc.ssl_channel_credentials(ca))
    assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE

    # Certificates from another CA, even naming a mesh identity, are not the mesh's.
    stranger = tmp_path / "stranger"
    ensure_identities(stranger, [CLI])
    own = transport_for(CLI, TlsSection(pki_dir=stranger), tmp_path).files
    assert own is not None
    _, cert, key = own.read()
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await _who(port, grpc.ssl_channel_credentials(ca, key, cert))
    assert foreign.value.code() == grpc.StatusCode.UNAVAILABLE


def test_missing_credentials_fail_at_start_saying_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"module/library.*soulspot up.*PLAINTEXT"):
        transport_for(Identity.module("library"), TlsSection(), tmp_path)


def test_plaintext_is_explicit_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls, "_warned_plaintext", False)
    with caplog.at_level(logging.WARNING, logger=tls.__name__):
        first = transport_for(ROUTER, TlsSection(plaintext=True), tmp_path)
        transport_for(ROUTER, TlsSection(plaintext=True), tmp_path)
    assert first == Transport(ROUTER, None)
    assert first.server_credentials() is None
    assert first.channel_credentials() is None
    assert [r.getMessage() for r in caplog.records].count(
        "plaintext transport: callers are not authenticated"
    ) == 1


async def test_kit_servers_and_channels_speak_the_process_transport(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ensure_identities(pki, [ROUTER, CLI])
    router = transport_for(ROUTER, TlsSection(pki_dir=pki), tmp_path)
    cli = transport_for(CLI, TlsSection(pki_dir=pki), tmp_path)
    server = KitServer("router", transport=router)
    await server.start()
    try:
        assert server.secure
        async with open_channel(server.address, transport=cli) as channel:
            assert await check_health(channel, wait=True, timeout=5)
        async with open_channel(server.address) as plaintext:  # no process transport: refused
            assert not await check_health(plaintext, timeout=1)
        previous = use_transport(cli)  # the process's default, as an entry point sets it
        try:
            async with open_channel(server.address) as channel:
                assert await check_health(channel, wait=True, timeout=5)
        finally:
            use_transport(previous)
    finally:
        await server.stop(0)
