from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tests.helpers.echo_service import SERVICE

if TYPE_CHECKING:
    from services.kit.rpc.server import KitServer

GRPCURL = Path(sys.executable).with_name("grpcurl")


async def _grpcurl(*args: str) -> str:
    # A subprocess, awaited: the in-process aio server must keep serving meanwhile.
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_grpcurl_lists_services_via_reflection(server: KitServer) -> None:
    listed = (await _grpcurl("-plaintext", server.address, "list")).split()
    assert SERVICE in listed
    assert "grpc.health.v1.Health" in listed
    assert "grpc.reflection.v1alpha.ServerReflection" in listed


async def test_grpcurl_describes_and_calls_by_name(server: KitServer) -> None:
    described = await _grpcurl("-plaintext", server.address, "describe", SERVICE)
    assert "rpc Say" in described
    reply = json.loads(
        await _grpcurl("-plaintext", "-d", '{"text": "hi"}', server.address, f"{SERVICE}/Say")
    )
    assert reply["text"] == "hi"


async def test_grpcurl_health_check_serving(server: KitServer) -> None:
    out = await _grpcurl(
        "-plaintext", "-d", '{"service":""}', server.address, "grpc.health.v1.Health/Check"
    )
    assert json.loads(out) == {"status": "SERVING"}
