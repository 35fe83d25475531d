"""Mutual TLS between real processes: a caller without a certificate of the mesh's CA (a
plaintext channel, or a certificate of another CA) reaches neither the router nor a module,
while the command line's certificate does; grpcurl works with the generated files."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from services.kit.rpc.channel import open_channel, wait_for_ready
from services.kit.security.ca import identity_files
from services.kit.security.identity import CLI
from soulspot.router.v1 import router_pb2, status_pb2_grpc
from tests.helpers.pki import make_pki, transport_as
from tests.helpers.processes import Process, free_port, start_module, start_router

if TYPE_CHECKING:
    from collections.abc import Iterator

    from services.kit.security.tls import Transport

GRPCURL = Path(sys.executable).with_name("grpcurl")
STATUS = "soulspot.router.v1.StatusService"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Process]]:
    """A TLS router and one fake module registered with it."""
    tmp = tmp_path_factory.mktemp("tls")
    router = start_router(tmp, free_port())
    module: Process | None = None
    try:
        asyncio.run(wait_for_ready(router.address, 20, transport=router.client))
        module = start_module(tmp, "t-fake", router.address)
        asyncio.run(wait_for_ready(module.address, 20, transport=router.client))
        yield router, module
    finally:
        if module is not None:
            module.stop()
        router.stop()


async def _status(address: str, transport: Transport | None) -> router_pb2.GetStatusResponse:
    # A plaintext channel is a channel without a transport while the process has none.
    async with open_channel(address, transport=transport) as channel:
        stub = status_pb2_grpc.StatusServiceStub(channel)
        return await stub.GetStatus(router_pb2.GetStatusRequest(), timeout=3)


async def _health_code(address: str, transport: Transport | None) -> grpc.StatusCode:
    async with open_channel(address, interceptors=(), transport=transport) as channel:
        try:
            check: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/grpc.health.v1.Health/Check"
            )
            await check(b"", timeout=3)
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


async def test_the_mesh_certificate_reaches_the_router(mesh: tuple[Process, Process]) -> None:
    router, module = mesh
    status = await _status(router.address, router.client)
    assert module.name in [m.name for m in status.modules]


async def test_a_plaintext_caller_reaches_neither_router_nor_module(
    mesh: tuple[Process, Process],
) -> None:
    router, module = mesh
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _status(router.address, None)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await _health_code(module.address, None) == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_of_another_ca_reaches_neither_router_nor_module(
    mesh: tuple[Process, Process], tmp_path: Path
) -> None:
    router, module = mesh
    stranger = transport_as(make_pki(tmp_path / "other-ca", modules=()))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _status(router.address, stranger)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await _health_code(module.address, stranger) == grpc.StatusCode.UNAVAILABLE
    # The same files of the mesh's own CA do get through (the refusal is the CA's).
    assert await _health_code(module.address, router.client) == grpc.StatusCode.OK


async def _grpcurl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, stdout.decode(), stderr.decode()


def _tls_flags(pki_dir: Path) -> list[str]:
    files = identity_files(pki_dir, CLI)
    return ["-cacert", str(files.ca), "-cert", str(files.cert), "-key", str(files.key)]


async def test_grpcurl_lists_and_calls_the_tls_router_with_the_generated_files(
    mesh: tuple[Process, Process],
) -> None:
    router, module = mesh
    assert router.pki_dir is not None
    flags = _tls_flags(router.pki_dir)
    code, out, err = await _grpcurl(*flags, router.address, "list")
    assert code == 0, err
    assert STATUS in out.split()
    code, out, err = await _grpcurl(*flags, router.address, f"{STATUS}/GetStatus")
    assert code == 0, err
    assert module.name in [m["name"] for m in json.loads(out)["modules"]]


async def test_grpcurl_without_the_client_certificate_is_refused(
    mesh: tuple[Process, Process],
) -> None:
    router, _ = mesh
    assert router.pki_dir is not None
    ca = str(identity_files(router.pki_dir, CLI).ca)
    code, _, _ = await _grpcurl("-cacert", ca, router.address, "list")
    assert code != 0
    code, _, _ = await _grpcurl("-plaintext", router.address, "list")
    assert code != 0
