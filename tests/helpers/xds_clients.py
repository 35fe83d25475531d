"""Start proxyless xDS clients (`tests.helpers.xds_caller`) as child processes and read their
JSON results: one batch of calls (`xds_calls`) or a running load (`XdsLoad`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from services.kit.rpc.xds_bootstrap import BOOTSTRAP_CONFIG_ENV, bootstrap_json
from services.kit.security.ca import identity_files
from services.kit.security.identity import CLI, Identity

REPO = Path(__file__).resolve().parents[2]


def bootstrap(router: str, pki_dir: Path | None = None, identity: Identity = CLI) -> str:
    """The bootstrap JSON for a client of `router`: mutual TLS as `identity` with its files in
    `pki_dir`, or insecure."""
    files = identity_files(pki_dir, identity) if pki_dir is not None else None
    return bootstrap_json(router, node_id=identity.uri, files=files)


def _env(bootstrap_text: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_XDS_BOOTSTRAP")}
    env[BOOTSTRAP_CONFIG_ENV] = bootstrap_text
    return env


def _args(pki_dir: Path | None, identity: Identity, extra: tuple[str, ...]) -> list[str]:
    args = [sys.executable, "-m", "tests.helpers.xds_caller", *extra]
    if pki_dir is not None:
        args += [f"--pki-dir={pki_dir}", f"--identity={identity.kind}/{identity.name}"]
    return args


async def xds_calls(
    bootstrap_text: str,
    *extra: str,
    pki_dir: Path | None = None,
    identity: Identity = CLI,
    timeout: float = 40.0,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Run one batch (`--calls N` and the like) in a child process; its JSON result."""
    proc = await asyncio.create_subprocess_exec(
        *_args(pki_dir, identity, extra),
        cwd=REPO,
        env=_env(bootstrap_text),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


class XdsLoad:
    """A child process calling at a given concurrency until stopped; `latest` is its last
    reported totals."""

    def __init__(
        self,
        bootstrap_text: str,
        concurrency: int,
        *extra: str,
        pki_dir: Path | None = None,
        identity: Identity = CLI,
    ) -> None:
        self.bootstrap_text = bootstrap_text
        self.pki_dir = pki_dir
        self.identity = identity
        self.concurrency = concurrency
        self.extra = extra
        self.latest: dict[str, Any] = {"ok": 0, "failed": {}, "by": {}}
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._final: asyncio.Future[dict[str, Any]] | None = None

    async def start(self) -> XdsLoad:
        self._final = asyncio.get_running_loop().create_future()
        self._proc = await asyncio.create_subprocess_exec(
            *_args(self.pki_dir, self.identity, (f"--load={self.concurrency}", *self.extra)),
            cwd=REPO,
            env=_env(self.bootstrap_text),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        assert self._final is not None
        async for raw in self._proc.stdout:
            line = json.loads(raw)
            self.latest = line
            if line.get("final"):
                self._final.set_result(line)
        if not self._final.done():
            self._final.set_exception(RuntimeError("the xDS caller ended without totals"))

    def served_by(self, module: str) -> int:
        return int(self.latest["by"].get(module, 0))

    @property
    def failures(self) -> int:
        return sum(self.latest["failed"].values())

    async def wait_for(self, check: Any, timeout: float = 20.0) -> None:  # noqa: ASYNC109
        """Until check(self) is true (the totals arrive every 100 ms)."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + timeout
        while not check(self):
            if loop.time() > ends:
                raise AssertionError(f"condition not met within {timeout}s: {self.latest}")
            await asyncio.sleep(0.05)

    async def stop(self) -> dict[str, Any]:
        """Stop calling; the final totals."""
        assert self._proc is not None
        assert self._proc.stdin is not None
        assert self._final is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._proc.stdin.write(b"stop\n")
            await self._proc.stdin.drain()
            self._proc.stdin.close()
        try:
            return await asyncio.wait_for(self._final, 20)
        finally:
            await self.close()

    async def close(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
