"""`python -m services.<module>` as a real process with no router: it serves alone, warns
once that the router is unreachable, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.kit.rpc.channel import open_channel
from services.kit.testing.sample_audio import DEFAULT_SAMPLE_TRACKS, make_sample_library
from soulspot.capabilities.v1 import download_pb2, download_pb2_grpc, search_pb2, search_pb2_grpc
from soulspot.common.v1 import references_pb2
from tests.helpers.module_checks import eventually, health_status
from tests.helpers.pki import PKI_DIR_ENV, make_pki, tls_env, transport_as

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _answers(channel: Any) -> bool:
    try:
        await health_status(channel, "")
    except grpc.aio.AioRpcError:
        return False
    return True


def _env(module: str, port: int, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOULSPOT_")}
    env.update(
        {
            f"SOULSPOT_{module.upper()}__PORT": str(port),
            # Nothing listens there: the module must serve standalone.
            "SOULSPOT_ROUTER_ADDRESS": f"127.0.0.1:{_free_port()}",
            "SOULSPOT_STATE_DIR": str(tmp_path / "state"),
            "SOULSPOT_LIBRARY_ROOT": str(tmp_path / "library"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")]),
            # Mutual TLS, as in the mesh: its certificate from a CA of this test.
            **tls_env(make_pki(tmp_path / "pki", modules=[module])),
        }
    )
    env.update(extra)
    return env


async def _run(module: str, env: dict[str, str], check: Any) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{module}",
        cwd=str(ROOT),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        address = f"127.0.0.1:{env[f'SOULSPOT_{module.upper()}__PORT']}"
        client = transport_as(Path(env[PKI_DIR_ENV]))
        async with open_channel(address, transport=client) as channel:
            # Liveness, not readiness: a module whose backend is down answers NOT_SERVING.
            await eventually(lambda: _answers(channel), within_s=20, what=f"{module} to answer")
            await check(channel)
        # Let the registration try (and fail) a few times: still one warning.
        await asyncio.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    standalone = [line for line in lines if "serving standalone" in line["msg"]]
    assert len(standalone) == 1, [line["msg"] for line in lines]
    return lines


def errors(lines: list[dict[str, Any]]) -> list[str]:
    return [line["msg"] for line in lines if line["level"] in ("ERROR", "CRITICAL")]


async def test_folder_standalone(tmp_path: Path) -> None:
    source = tmp_path / "source"
    await asyncio.to_thread(make_sample_library, source, DEFAULT_SAMPLE_TRACKS[:2])
    env = _env(
        "folder",
        _free_port(),
        tmp_path,
        SOULSPOT_FOLDER__SOURCE_DIR=str(source),
        SOULSPOT_FOLDER__DOWNLOADS_DIR=str(tmp_path / "downloads"),
    )

    async def check(channel: Any) -> None:
        stub = download_pb2_grpc.DownloadServiceStub(channel)
        track = references_pb2.TrackReference(title="Harbour Lights", artist="The Paper Lanterns")
        reply = await stub.DownloadTrack(download_pb2.DownloadTrackRequest(track=track))
        assert reply.state == download_pb2.DOWNLOAD_STATE_COMPLETED

    lines = await _run("folder", env, check)
    # The download's events could not reach a router: that is said, not silently dropped.
    assert any("holding events" in line["msg"] for line in lines)
    assert errors(lines)
    assert all("not" in msg and "events" in msg for msg in errors(lines))


async def test_soulseek_standalone_without_slskd_is_not_serving(tmp_path: Path) -> None:
    env = _env("soulseek", _free_port(), tmp_path)

    async def check(channel: Any) -> None:
        assert await health_status(channel, "soulspot.capabilities.v1.DownloadService") == 2

    lines = await _run("soulseek", env, check)
    assert errors(lines) == []
    assert any("SOULSPOT_SOULSEEK__URL" in str(line.get("reason", "")) for line in lines)


@pytest.mark.parametrize("module", ["catalog"])
async def test_catalog_standalone(tmp_path: Path, module: str) -> None:
    await asyncio.to_thread(make_sample_library, tmp_path / "library", DEFAULT_SAMPLE_TRACKS[:2])
    env = _env(module, _free_port(), tmp_path)

    async def check(channel: Any) -> None:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        for _ in range(100):
            answer = await stub.SearchTrack(search_pb2.SearchTrackRequest(query="harbour"))
            if answer.results:
                break
            await asyncio.sleep(0.05)
        assert [r.track.title for r in answer.results] == ["Harbour Lights"]

    assert errors(await _run(module, env, check)) == []
