"""Start a router and chosen modules as real processes for end-to-end tests.

Every process gets a free port (bound to port 0, released, passed on), one shared temporary
state dir and library root, and its own log file (printed when a test fails to start it).
`stop()` sends SIGTERM and waits; `kill()` sends SIGKILL; `close()` ends whatever is left,
SIGTERM first, SIGKILL after a grace period. Every process speaks mutual TLS with certificates
of a CA under `tmp/pki`; inside `async with Mesh(...)` the test itself speaks as the command
line (the process's transport), so its `open_channel` calls reach the mesh.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from services.kit.rpc.channel import check_health, open_channel
from services.kit.security.tls import Transport, use_transport
from soulspot.router.v1 import (
    event_bus_pb2_grpc,
    pipeline_runs_pb2_grpc,
    router_pb2,
    status_pb2_grpc,
)
from tests.helpers.pki import make_pki, tls_env, transport_as

if TYPE_CHECKING:
    from collections.abc import Mapping

ROOT = Path(__file__).resolve().parents[2]
# The capability service each module serves, for readiness checks through the router.
MODULE_SERVICES: dict[str, str] = {
    "spotify": "soulspot.capabilities.v1.SearchService",
    "catalog": "soulspot.capabilities.v1.SearchService",
    "soulseek": "soulspot.capabilities.v1.DownloadService",
    "folder": "soulspot.capabilities.v1.DownloadService",
    "metadata": "soulspot.capabilities.v1.MetadataService",
    "library": "soulspot.capabilities.v1.LibraryService",
    "notifications": "soulspot.capabilities.v1.NotificationService",
}


def free_port() -> int:
    """A port that was free a moment ago (the OS picks it for a socket bound to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    name: str
    target: str  # "router" or "services.<module>"
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class Mesh:
    """A router plus modules under `tmp`. Use as `async with Mesh(tmp) as mesh:`."""

    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    grace_s: float = 5.0
    # What runs the router: `python -m router`, unless a test, or SOULSPOT_E2E_ROUTER_ARGV
    # (e.g. "path/to/entry.py" to try another entry point), says otherwise.
    router_argv: tuple[str, ...] = tuple(
        os.environ.get("SOULSPOT_E2E_ROUTER_ARGV", "-m router").split()
    )

    def __post_init__(self) -> None:
        self.state_dir = self.tmp / "state"
        self.library_root = self.tmp / "library"
        self.logs = self.tmp / "logs"
        for path in (self.state_dir, self.library_root, self.logs):
            path.mkdir(parents=True, exist_ok=True)
        self.router_port = free_port()
        self._channel: grpc.aio.Channel | None = None
        self.pki_dir = make_pki(self.tmp / "pki")
        # How the test speaks to the mesh: as the command line.
        self.client: Transport = transport_as(self.pki_dir)
        self._previous_transport: Transport | None = None

    @property
    def router_address(self) -> str:
        return f"127.0.0.1:{self.router_port}"

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOULSPOT_")}
        env.update(
            {
                "SOULSPOT_STATE_DIR": str(self.state_dir),
                "SOULSPOT_LIBRARY_ROOT": str(self.library_root),
                # File operations stay inside the downloads folders the tests' modules use.
                "SOULSPOT_ROUTER__DOWNLOAD_DIRS": str(self.tmp / "downloads"),
                "SOULSPOT_LIBRARY__IMPORT_DIRS": str(self.tmp / "downloads"),
                "SOULSPOT_METADATA__TAG_DIRS": str(self.tmp / "downloads"),
                "SOULSPOT_ROUTER_ADDRESS": self.router_address,
                "SOULSPOT_LOG_LEVEL": "INFO",
                "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")]),
                "PYTHONUNBUFFERED": "1",
                **tls_env(self.pki_dir),
            }
        )
        env.update(self.env)
        return env

    # --- processes -----------------------------------------------------------------------

    def start_router(self, env: Mapping[str, str] | None = None) -> Proc:
        extra = {"SOULSPOT_ROUTER__ADDRESS": self.router_address, **(env or {})}
        proc = self.procs.get("router") or Proc(
            "router", "router", self.router_port, {}, self.logs / "router.log"
        )
        proc.env = {**self._base_env(), **extra}
        return self._spawn(proc)

    def start_module(self, name: str, env: Mapping[str, str] | None = None) -> Proc:
        """Start `services.<name>` (again, on the same port, when it ran before)."""
        proc = self.procs.get(name)
        if proc is None:
            port = free_port()
            proc = Proc(name, f"services.{name}", port, {}, self.logs / f"{name}.log")
        extra = {f"SOULSPOT_{name.upper()}__PORT": str(proc.port), **(env or {})}
        proc.env = {**self._base_env(), **proc.env, **extra}
        return self._spawn(proc)

    def _spawn(self, proc: Proc) -> Proc:
        if proc.running:
            raise RuntimeError(f"{proc.name} is already running")
        log = proc.log_path.open("ab")
        argv = self.router_argv if proc.name == "router" else ("-m", proc.target)
        proc.process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=proc.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs[proc.name] = proc
        return proc

    async def stop(self, name: str, *, grace_s: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after the grace period; returns the exit code."""
        proc = self.procs[name]
        if proc.process is None or not proc.running:
            return proc.process.returncode if proc.process else None
        proc.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(proc.process.wait), grace_s or self.grace_s
            )
        except TimeoutError:
            proc.process.kill()
            return await asyncio.to_thread(proc.process.wait)

    async def kill(self, name: str) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        proc = self.procs[name]
        if proc.process is not None and proc.running:
            proc.process.kill()
            await asyncio.to_thread(proc.process.wait)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        names = [n for n, p in self.procs.items() if p.running]
        # Modules first, router last, so modules do not log a lost router at shutdown.
        names.sort(key=lambda n: n == "router")
        await asyncio.gather(*(self.stop(n) for n in names))

    async def __aenter__(self) -> Mesh:
        self._previous_transport = use_transport(self.client)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.close()
        finally:
            use_transport(self._previous_transport)

    # --- readiness -----------------------------------------------------------------------

    def channel(self) -> grpc.aio.Channel:
        """A channel to the router (kept open; closed by close())."""
        if self._channel is None:
            self._channel = open_channel(self.router_address, transport=self.client)
        return self._channel

    def status(self) -> status_pb2_grpc.StatusServiceAsyncStub:
        return status_pb2_grpc.StatusServiceStub(self.channel())

    def event_bus(self) -> event_bus_pb2_grpc.EventBusServiceAsyncStub:
        return event_bus_pb2_grpc.EventBusServiceStub(self.channel())

    def pipeline_runs(self) -> pipeline_runs_pb2_grpc.PipelineRunServiceAsyncStub:
        return pipeline_runs_pb2_grpc.PipelineRunServiceStub(self.channel())

    async def wait_serving(
        self,
        name: str,
        timeout: float = 20.0,  # noqa: ASYNC109 (bounds the whole wait)
        service: str = "",
    ) -> None:
        """Until the process answers SERVING to health Check for `service`."""
        proc = self.procs[name]
        async with open_channel(proc.address, interceptors=(), transport=self.client) as channel:
            try:
                async with asyncio.timeout(timeout):
                    while not await check_health(channel, service, timeout=1.0):
                        if not proc.running:
                            raise RuntimeError(f"{name} exited:\n{proc.log()[-4000:]}")
                        await asyncio.sleep(0.1)
            except TimeoutError:
                raise TimeoutError(f"{name} not serving:\n{proc.log()[-4000:]}") from None

    async def wait_routable(
        self,
        module: str,
        capability: str,
        timeout: float = 20.0,  # noqa: ASYNC109 (bounds the whole wait)
        *,
        routable: bool = True,
    ) -> None:
        """Until the router's status lists `module` as a routable provider of `capability`
        (or, with routable=False, until it no longer does)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        status = await self.status().GetStatus(
                            router_pb2.GetStatusRequest(), timeout=2.0
                        )
                    except grpc.aio.AioRpcError:
                        status = router_pb2.GetStatusResponse()
                    now = any(
                        p.module == module and p.routable
                        for info in status.capabilities
                        if info.name == capability
                        for p in info.providers
                    )
                    if now == routable:
                        return
                    await asyncio.sleep(0.1)
        except TimeoutError:
            logs = "\n".join(
                f"--- {n}\n{p.log()[-2000:]}" for n, p in self.procs.items() if n in (module,)
            )
            state = "routable" if routable else "unroutable"
            raise TimeoutError(f"{module} never {state} for {capability}\n{logs}") from None

    async def start_stack(
        self,
        modules: Mapping[str, Mapping[str, str] | None],
        router_env: Mapping[str, str] | None = None,
    ) -> None:
        """Router, then modules; returns once the router routes to each of them."""
        self.start_router(router_env)
        await self.wait_serving("router")
        for name, env in modules.items():
            self.start_module(name, env)
        for name in modules:
            await self.wait_serving(name)
