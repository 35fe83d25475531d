"""services.kit.rpc.healthprobe against a real KitServer speaking mutual TLS: readiness,
liveness, no server, the identity it presents and the credentials it needs."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from services.kit.rpc.healthprobe import main, probe
from services.kit.rpc.server import KitServer
from services.kit.security.identity import ROUTER
from tests.helpers.pki import make_pki, transport_as

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

SERVICE = "soulspot.test.v1.Probe"


@pytest.fixture
def pki(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A mesh CA in the test's folder, and the settings that point the probe at it."""
    pki_dir = make_pki(tmp_path / "pki", modules=["library"])
    for name in ("SOULSPOT_TLS__PLAINTEXT", "SOULSPOT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SOULSPOT_TLS__PKI_DIR", str(pki_dir))
    return pki_dir


@pytest.fixture
async def server(pki: Path) -> AsyncIterator[KitServer]:
    # A named service with no handlers: health and reflection know it, that is all the probe
    # needs. Served as the router, with mutual TLS.
    kit = KitServer("probe-test", "127.0.0.1:0", transport=transport_as(pki, ROUTER))
    kit.add_service(lambda _server: None, SERVICE)
    await kit.start()
    try:
        yield kit
    finally:
        await kit.stop(0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _main(*argv: str) -> int:
    # main() runs its own event loop, so it gets a thread of its own.
    return await asyncio.to_thread(main, list(argv))


async def test_serving_exits_0_and_prints_the_status(
    server: KitServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _main(f"127.0.0.1:{server.port}") == 0
    assert capsys.readouterr().out.strip() == f"127.0.0.1:{server.port}: SERVING"


async def test_not_serving_exits_1_unless_liveness_is_asked_for(
    server: KitServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await server.set_status("", False, "no credentials")
    address = f"127.0.0.1:{server.port}"
    assert await _main(address) == 1
    assert "NOT_SERVING" in capsys.readouterr().out
    assert await _main("--serving-or-not", address) == 0
    assert "NOT_SERVING" in capsys.readouterr().out


async def test_one_service_is_checked_by_name(server: KitServer) -> None:
    await server.set_status(SERVICE, False, "backend down")
    address = f"127.0.0.1:{server.port}"
    assert await _main(address) == 0  # the server as a whole still serves
    assert await _main("--service", SERVICE, address) == 1


async def test_unknown_service_is_a_failure_even_for_liveness(
    server: KitServer, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{server.port}"
    assert await _main("--serving-or-not", "--service", "no.such.Service", address) == 1
    assert "NOT_FOUND" in capsys.readouterr().out


@pytest.mark.usefixtures("pki")
async def test_no_server_exits_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{_free_port()}"
    assert await _main("--timeout", "0.5", "--serving-or-not", address) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{address}: no answer (")
    assert "UNAVAILABLE" in out or "DEADLINE_EXCEEDED" in out


async def test_probe_result_without_a_server() -> None:
    result = await probe(f"127.0.0.1:{_free_port()}", deadline_s=0.5)
    assert not result.answered
    assert not result.ok(serving_or_not=True)
    assert result.error


def test_bad_timeout_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--timeout", "0", "127.0.0.1:1"]) == 2
    assert "--timeout" in capsys.readouterr().err


async def test_module_entry_point_as_a_container_runs_it(server: KitServer) -> None:
    # The healthcheck in docker-compose.yml runs exactly this command line.
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.kit.rpc.healthprobe", f"127.0.0.1:{server.port}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SERVING" in proc.stdout


async def test_the_identity_and_folder_come_from_flags(
    server: KitServer, pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOULSPOT_TLS__PKI_DIR", str(pki.parent / "elsewhere"))
    address = f"127.0.0.1:{server.port}"
    assert await _main("--pki-dir", str(pki), "--identity", "module/library", address) == 0
    uri = "spiffe://soulspot/module/library"
    assert await _main("--pki-dir", str(pki), "--identity", uri, address) == 0


async def test_missing_credentials_are_a_usage_error_naming_the_files(
    server: KitServer, pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No certificate was issued for this module.
    address = f"127.0.0.1:{server.port}"
    assert await _main("--identity", "module/catalog", address) == 2
    assert "module-catalog.crt" in capsys.readouterr().err


async def test_a_bad_identity_is_a_usage_error(
    server: KitServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _main("--identity", "nobody", f"127.0.0.1:{server.port}") == 2
    assert "--identity" in capsys.readouterr().err


async def test_a_plaintext_probe_gets_no_answer_from_a_tls_server(
    server: KitServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOULSPOT_TLS__PLAINTEXT", "true")
    address = f"127.0.0.1:{server.port}"
    assert await _main("--timeout", "1", "--serving-or-not", address) == 1
    assert "no answer" in capsys.readouterr().out
