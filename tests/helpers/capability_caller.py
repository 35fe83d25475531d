"""A module of its own process that calls another module's capability the way every module
does, `runtime.capability_channel(service)`: xds:/// when the router serves xDS, the router's
proxy otherwise.

gRPC's xDS client and its bootstrap are process-wide, so a test that needs a fresh one runs
this: `python -m tests.helpers.capability_caller --router ADDRESS` from the repository root,
with SOULSPOT_TLS__* in the environment; it is the module `caller`, serves nothing, registers
no capability, and reads SOULSPOT_CALLER__XDS like any module. It prints
`READY {"xds": true|false}` once its channels decided, then answers each line on stdin:

    search   -> {"ok": true, "source": "<module that answered>", "xds": ..., "via_router": ...,
                 "context_carried": ...} or {"ok": false, "code": "UNAVAILABLE", "xds": ...}
    wait-xds -> {"xds": true|false} after up to 10 s for the channels to move to xDS

`via_router` says whether the answer carried the router's `x-soulspot-module` header, which
only the router's proxy adds; `context_carried` whether the callee echoed the correlation id
the caller's call context held. A test starts one with `CallerProcess.start(...)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from services.kit.module.runtime import ModuleRuntime
from services.kit.module.spec import ModuleParts, ModuleSection, ModuleSpec
from services.kit.observability.logging import setup_logging
from services.kit.rpc import context as ctx
from services.kit.security.identity import Identity
from services.kit.security.tls import transport_for, use_transport
from services.kit.support.settings import KitSettings
from soulspot.capabilities.v1 import search_pb2, search_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

NAME = "caller"
SEARCH_SERVICE = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
ROUTER_MODULE_HEADER = "x-soulspot-module"


async def _search(runtime: ModuleRuntime[ModuleSection]) -> dict[str, Any]:
    channels = runtime.capability_channels
    assert channels is not None
    channel = runtime.capability_channel(SEARCH_SERVICE)
    assert channel is not None
    stub = search_pb2_grpc.SearchServiceStub(channel)
    correlation_id = ctx.new_correlation_id()
    # Inside a call of its own, as a module's handler is: the kit's channel carries the
    # correlation id to the callee, which echoes it.
    with ctx.bind(correlation_id, ctx.new_traceparent()):
        call = stub.SearchTrack(search_pb2.SearchTrackRequest(query="caller"), timeout=5)
        try:
            reply = await call
            metadata = [
                *(await call.initial_metadata() or ()),
                *(await call.trailing_metadata() or ()),
            ]
        except grpc.aio.AioRpcError as err:
            return {"ok": False, "code": err.code().name, "xds": channels.uses_xds}
    return {
        "ok": True,
        "source": reply.results[0].source if reply.results else "",
        "xds": channels.uses_xds,
        "via_router": any(key == ROUTER_MODULE_HEADER for key, _ in metadata),
        "context_carried": ctx.metadata_value(metadata, ctx.CORRELATION_ID_KEY) == correlation_id,
    }


async def _serve(runtime: ModuleRuntime[ModuleSection], read_line: Callable[[], str]) -> None:
    channels = runtime.capability_channels
    assert channels is not None
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, read_line)).strip()
        if not line:
            return
        if line == "search":
            answer = await _search(runtime)
        elif line == "wait-xds":
            answer = {"xds": await channels.wait_for_xds(10)}
        else:
            answer = {"error": f"unknown command {line!r}"}
        print(json.dumps(answer), flush=True)


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.capability_caller")
    parser.add_argument("--router", required=True)
    args = parser.parse_args(argv)
    setup_logging(NAME, "INFO")
    settings = KitSettings(router_address=args.router)
    use_transport(transport_for(Identity.module(NAME), settings.tls, settings.state_dir))
    spec = ModuleSpec(
        name=NAME,
        default_port=0,
        capabilities=(),
        factory=lambda _runtime: ModuleParts([]),
        section_cls=ModuleSection,
    )
    async with ModuleRuntime(spec, settings, port=0) as runtime:
        assert runtime.capability_channels is not None
        print(f"READY {json.dumps({'xds': runtime.capability_channels.uses_xds})}", flush=True)
        await _serve(runtime, sys.stdin.readline)


@dataclass
class CallerProcess:
    """The test's side of a caller process: one command per line, one JSON answer per line."""

    popen: subprocess.Popen[str]
    ready: dict[str, Any]

    @classmethod
    def start(cls, router: str, pki_dir: Path | None, *, xds: bool = True) -> CallerProcess:
        """A caller of `router` (its certificate in `pki_dir`; plaintext when None), started
        from the repository root and READY; `xds=False` sets SOULSPOT_CALLER__XDS=false."""
        from tests.helpers.pki import add_modules, tls_env
        from tests.helpers.processes import REPO

        environment = {k: v for k, v in os.environ.items() if k != "SOULSPOT_CONFIG"}
        if pki_dir is None:
            environment["SOULSPOT_TLS__PLAINTEXT"] = "true"
        else:
            add_modules(pki_dir, NAME)
            environment.update(tls_env(pki_dir))
        if not xds:
            environment["SOULSPOT_CALLER__XDS"] = "false"
        command = [sys.executable, "-m", "tests.helpers.capability_caller", "--router", router]
        popen = subprocess.Popen(
            command,
            cwd=REPO,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = cls._read(popen)
        if not line.startswith("READY "):
            popen.kill()
            popen.wait(5)
            raise RuntimeError(f"caller did not get ready: {line!r}")
        return cls(popen, json.loads(line.removeprefix("READY ")))

    @staticmethod
    def _read(popen: subprocess.Popen[str]) -> str:
        # Every command answers within its own deadline (5 s calls, a 10 s wait), and the
        # test's timeout bounds a process that hangs anyway.
        assert popen.stdout is not None
        return popen.stdout.readline()

    def ask(self, command: str) -> dict[str, Any]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(command + "\n")
        self.popen.stdin.flush()
        line = self._read(self.popen)
        if not line:
            raise RuntimeError(f"caller exited with {self.popen.poll()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        if self.popen.poll() is None:
            assert self.popen.stdin is not None
            self.popen.stdin.close()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        assert self.popen.stdout is not None
        self.popen.stdout.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
