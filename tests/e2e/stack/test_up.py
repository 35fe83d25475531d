"""`soulspot up` as a real process: every module starts, the router sees the offline ones
active and spotify/soulseek inactive with their reasons, Ctrl-C stops every child."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.stack import alive, child_pids, free_offset

ROOT = Path(__file__).resolve().parents[3]
OFFLINE_ACTIVE = {"folder", "library", "metadata", "notifications", "catalog"}
NEEDS_BACKEND = {"spotify", "soulseek"}
ALL_MODULES = OFFLINE_ACTIVE | NEEDS_BACKEND
PORTS = (50051, 8080, 50061, 50062, 50063, 50064, 50065, 50066, 50067)


pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def _status(address: str, pki_dir: Path) -> dict[str, tuple[int, str]]:
    from services.kit.rpc.channel import open_channel
    from soulspot.router.v1 import router_pb2, status_pb2_grpc
    from tests.helpers.pki import transport_as

    # As the command line, with the certificate `up` made (reading it fails until then).
    async with open_channel(address, transport=transport_as(pki_dir)) as channel:
        stub = status_pb2_grpc.StatusServiceStub(channel)
        reply = await stub.GetStatus(router_pb2.GetStatusRequest(), timeout=2.0)
    return {m.name: (m.status, m.reason) for m in reply.modules}


@pytest.mark.timeout(150)
async def test_up_runs_the_mesh_and_stops_it(tmp_path: Path) -> None:
    from soulspot.common.v1 import module_pb2

    active = module_pb2.MODULE_STATUS_ACTIVE
    inactive = module_pb2.MODULE_STATUS_INACTIVE
    offset = free_offset(PORTS, 10_000, 14_000)
    router = f"127.0.0.1:{50051 + offset}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOULSPOT_")}
    # `up` makes the CA and every certificate here on its first run.
    pki_dir = tmp_path / "st" / "state" / "pki"
    out = (tmp_path / "up.out").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "up",
        "--state-dir",
        str(tmp_path / "st"),
        "--port-offset",
        str(offset),
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    children: set[int] = set()
    try:
        seen: dict[str, tuple[int, str]] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.returncode is None, (tmp_path / "up.out").read_text()
            children |= child_pids(proc.pid)
            with contextlib.suppress(Exception):
                seen = await _status(router, pki_dir)
            ready = all(seen.get(m, (0, ""))[0] == active for m in OFFLINE_ACTIVE) and all(
                seen.get(m, (0, ""))[0] == inactive and seen[m][1] for m in NEEDS_BACKEND
            )
            if ready:
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail(f"router status never settled: {seen}\n{(tmp_path / 'up.out').read_text()}")
        children |= child_pids(proc.pid)
        assert len(children) == 8, children  # the router and seven modules
        samples = list((tmp_path / "st" / "source").rglob("*.*"))
        assert samples, "no sample audio generated for the folder module"
        assert (tmp_path / "st" / "logs" / "router.log").is_file()
        # One certificate per process, keys readable by their owner only.
        for stem in ("router-router", "client-cli", *(f"module-{m}" for m in ALL_MODULES)):
            assert (pki_dir / f"{stem}.crt").is_file(), stem
            assert (pki_dir / f"{stem}.key").stat().st_mode & 0o077 == 0, stem

        # A fresh machine, nothing configured: `soulspot get` lands a sample in the library.
        get = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.main",
            "--pki-dir",
            str(pki_dir),
            "get",
            "The Paper Lanterns - Harbour Lights",
            "--router",
            router,
            "--timeout",
            "60",
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        printed, _ = await asyncio.wait_for(get.communicate(), 90)
        assert get.returncode == 0, printed.decode()
        imported = list((tmp_path / "st" / "library").rglob("*Harbour Lights*"))
        assert len(imported) == 1, printed.decode()
        assert str(imported[0]) in printed.decode().replace("\n", "")

        # Asked again (now the catalog knows it), the library's copy is reported, not fetched.
        again = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.main",
            "--pki-dir",
            str(pki_dir),
            "get",
            "Harbour Lights",
            "--router",
            router,
            cwd=ROOT,
            env={**env, "COLUMNS": "400"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        printed, _ = await asyncio.wait_for(again.communicate(), 90)
        assert again.returncode == 0, printed.decode()
        assert f"already in the library: {imported[0]}" in printed.decode()
        assert len(list((tmp_path / "st" / "library").rglob("*Harbour Lights*"))) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            out.close()
    assert code == 0, (tmp_path / "up.out").read_text()
    assert not [pid for pid in children if alive(pid)]
