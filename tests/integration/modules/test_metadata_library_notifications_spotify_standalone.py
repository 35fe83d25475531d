"""`python -m services.<module>` for metadata, library, notifications and spotify as real
processes with no router: each serves alone, warns once, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.kit.rpc.channel import open_channel
from services.kit.testing.sample_audio import write_flac
from soulspot.capabilities.v1 import (
    library_pb2,
    library_pb2_grpc,
    metadata_pb2,
    metadata_pb2_grpc,
    notify_pb2,
    notify_pb2_grpc,
)
from soulspot.common.v1 import references_pb2
from tests.helpers.module_checks import eventually, health_status
from tests.helpers.pki import make_pki, tls_env, transport_as

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

ROOT = Path(__file__).resolve().parents[3]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(module: str, port: int, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOULSPOT_")}
    env.update(
        {
            f"SOULSPOT_{module.upper()}__PORT": str(port),
            "SOULSPOT_ROUTER_ADDRESS": f"127.0.0.1:{_free_port()}",  # nothing listens there
            "SOULSPOT_STATE_DIR": str(tmp_path / "state"),
            "SOULSPOT_LIBRARY_ROOT": str(tmp_path / "library"),
            "SOULSPOT_METADATA__OFFLINE": "true",
            "SOULSPOT_METADATA__TAG_DIRS": str(tmp_path),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")]),
            # Mutual TLS, as in the mesh: its certificate from a CA of this test.
            **tls_env(make_pki(tmp_path / "pki", modules=[module])),
        }
    )
    return env


async def _answers(channel: grpc.aio.Channel) -> bool:
    try:
        await health_status(channel, "")
    except grpc.aio.AioRpcError:
        return False
    return True


async def _metadata(channel: grpc.aio.Channel, tmp_path: Path) -> None:
    assert await health_status(channel, "soulspot.capabilities.v1.MetadataService") == SERVING
    path = await asyncio.to_thread(
        write_flac, tmp_path / "a.flac", seconds=0.3, tags={"title": "X"}
    )
    reply = await metadata_pb2_grpc.MetadataServiceStub(channel).ReadTags(
        metadata_pb2.ReadTagsRequest(file=references_pb2.FileReference(path=str(path))), timeout=5
    )
    assert reply.track.title == "X"


async def _library(channel: grpc.aio.Channel, tmp_path: Path) -> None:
    assert await health_status(channel, "soulspot.capabilities.v1.LibraryService") == SERVING
    stats = await library_pb2_grpc.LibraryServiceStub(channel).GetLibraryStatistics(
        library_pb2.GetLibraryStatisticsRequest(), timeout=5
    )
    assert stats.tracks == 0


async def _notifications(channel: grpc.aio.Channel, tmp_path: Path) -> None:
    service = "soulspot.capabilities.v1.NotificationService"
    assert await health_status(channel, service) == SERVING
    reply = await notify_pb2_grpc.NotificationServiceStub(channel).NotifyTrackReady(
        notify_pb2.NotifyTrackReadyRequest(
            track=references_pb2.TrackReference(title="T", artist="A")
        ),
        timeout=5,
    )
    assert {d.channel for d in reply.deliveries} == {"log", "stream"}


async def _spotify(channel: grpc.aio.Channel, tmp_path: Path) -> None:
    # No credentials: alive, answering, and saying why it cannot serve.
    assert await health_status(channel, "soulspot.capabilities.v1.SearchService") == NOT_SERVING


CHECKS: dict[str, Callable[[grpc.aio.Channel, Path], Awaitable[None]]] = {
    "metadata": _metadata,
    "library": _library,
    "notifications": _notifications,
    "spotify": _spotify,
}


@pytest.mark.parametrize("module", sorted(CHECKS))
async def test_runs_standalone_with_one_command(module: str, tmp_path: Path) -> None:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{module}",
        cwd=str(ROOT),
        env=_env(module, port, tmp_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        address = f"127.0.0.1:{port}"
        async with open_channel(address, transport=transport_as(tmp_path / "pki")) as channel:
            # Answering at all is readiness here: spotify without credentials says NOT_SERVING.
            await eventually(partial(_answers, channel), within_s=20, what=f"{module} to answer")
            await CHECKS[module](channel, tmp_path)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    lines: list[dict[str, Any]] = [
        json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")
    ]
    assert [line["msg"] for line in lines].count("router unreachable, serving standalone") <= 1
    assert not [line for line in lines if line["level"] in ("ERROR", "CRITICAL")]
    if module == "spotify":
        assert any("SOULSPOT_SPOTIFY__CLIENT_ID" in str(line.get("reason")) for line in lines)
