"""`python -m router.bus` alone decides like the full router: over mutual TLS it stamps the
publisher from its certificate and refuses event types the contracts do not give it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from services.kit.rpc.channel import open_channel, wait_for_ready
from services.kit.security.identity import Identity
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import track_pb2
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2
from tests.helpers.bus import completed, envelope, track
from tests.helpers.pki import make_pki, tls_env, transport_as

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.e2e


@pytest.fixture
def bus_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    pki = make_pki(tmp_path / "pki", modules=("soulseek",))
    port_file = tmp_path / "port"
    env = {
        **os.environ,
        "SOULSPOT_STATE_DIR": str(tmp_path),
        "SOULSPOT_ROUTER__ADDRESS": "127.0.0.1:0",
        "SOULSPOT_BUS_PORT_FILE": str(port_file),
        "SOULSPOT_LOG_LEVEL": "WARNING",
        **tls_env(pki),
    }
    log = (tmp_path / "bus.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.bus"], cwd=REPO, env=env, stdout=log, stderr=log
    )
    try:
        yield str(port_file), pki
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _port(port_file: str) -> str:
    path = Path(port_file)
    return path.read_text() if path.is_file() else ""


async def _address(port_file: str) -> str:
    for _ in range(200):
        port = await asyncio.to_thread(_port, port_file)
        if port:
            return f"127.0.0.1:{port}"
        await asyncio.sleep(0.05)
    raise TimeoutError("router.bus wrote no port")


async def test_the_bus_process_stamps_and_refuses_by_identity(
    bus_process: tuple[str, Path],
) -> None:
    port_file, pki = bus_process
    address = await _address(port_file)
    soulseek = transport_as(pki, Identity.module("soulseek"))
    await wait_for_ready(address, 20, transport=soulseek)
    async with open_channel(address, transport=soulseek) as channel:
        stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        # A downloader's own event, claiming another publisher: stored under its real name.
        stored = await stub.Publish(
            router_pb2.PublishRequest(event=envelope(completed("d1"), source="library"))
        )
        assert stored.sequence > 0
        # An event only the library may publish: refused, naming the type.
        imported = track_pb2.TrackImported(
            track=track(), file=references_pb2.FileReference(file_id="f", path="/etc/passwd")
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Publish(router_pb2.PublishRequest(event=envelope(imported)))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "track.imported" in (refused.value.details() or "")
    async with open_channel(address, transport=transport_as(pki)) as admin:
        listed = await event_bus_pb2_grpc.EventBusServiceStub(admin).ListEvents(
            router_pb2.ListEventsRequest()
        )
    assert [(e.event_type, e.source_module) for e in listed.events] == [
        ("download.completed", "soulseek")
    ]
