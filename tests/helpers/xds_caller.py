"""A proxyless xDS client for tests, run as its own process: gRPC's xDS client and bootstrap
are process-global, so each test's client lives in a child of its own.

`python -m tests.helpers.xds_caller --target xds:///soulspot.capabilities.v1.SearchService`
with the bootstrap in GRPC_XDS_BOOTSTRAP_CONFIG (or GRPC_XDS_BOOTSTRAP). Plain generated stubs
on a plain grpc.aio channel, never the kit's channels. Modes:

- `--calls N`: N SearchTrack calls one after another; prints one JSON line
  `{"ok": n, "failed": {"UNAVAILABLE": n}, "by": {"module": n}, "errors": [...]}`.
- `--load C`: C concurrent callers until a line `stop` arrives on stdin; prints the running
  totals as one JSON line every `--every` seconds, then the final totals with `"final": true`.

`--pki-dir DIR --identity module/NAME|client/NAME` makes the channel speak mutual TLS as that
identity (xDS credentials with the mesh's TLS as fallback, services/kit/rpc/xds_bootstrap.py).
`--target-module NAME` sends x-soulspot-target-module.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from services.kit.rpc.xds_bootstrap import xds_channel_credentials, xds_channel_options
from services.kit.security.ca import identity_files
from services.kit.security.identity import Identity, Kind
from services.kit.security.tls import Transport
from soulspot.capabilities.v1 import search_pb2, search_pb2_grpc


@dataclass
class Totals:
    ok: int = 0
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    by: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)

    def line(self, **extra: object) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "failed": dict(self.failed),
                "by": dict(self.by),
                "errors": self.errors[:5],
                **extra,
            }
        )


def _channel(args: argparse.Namespace) -> grpc.aio.Channel:
    if not args.pki_dir:
        return grpc.aio.insecure_channel(args.target)
    kind, _, name = args.identity.partition("/")
    identity = Identity(Kind(kind), name)
    transport = Transport(identity, identity_files(Path(args.pki_dir), identity))
    return grpc.aio.secure_channel(
        args.target, xds_channel_credentials(transport), options=xds_channel_options(transport)
    )


async def _call(
    stub: search_pb2_grpc.SearchServiceAsyncStub, args: argparse.Namespace, totals: Totals
) -> None:
    metadata = (("x-soulspot-target-module", args.target_module),) if args.target_module else ()
    try:
        reply = await stub.SearchTrack(
            search_pb2.SearchTrackRequest(query="xds"), timeout=args.timeout, metadata=metadata
        )
    except grpc.aio.AioRpcError as err:
        totals.failed[err.code().name] += 1
        if len(totals.errors) < 5:
            totals.errors.append(f"{err.code().name}: {err.details()}")
        return
    totals.ok += 1
    totals.by[reply.results[0].source if reply.results else "?"] += 1


async def _load(stub: search_pb2_grpc.SearchServiceAsyncStub, args: argparse.Namespace) -> None:
    totals = Totals()
    stopping = asyncio.Event()

    async def worker() -> None:
        while not stopping.is_set():
            await _call(stub, args, totals)

    async def report() -> None:
        while not stopping.is_set():
            print(totals.line(), flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), args.every)

    loop = asyncio.get_running_loop()
    workers = [asyncio.create_task(worker()) for _ in range(args.load)]
    reporter = asyncio.create_task(report())
    # Read stdin in a thread: a pipe is not always selectable by the event loop.
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "stop":
            break
    stopping.set()
    await asyncio.gather(*workers, reporter)
    print(totals.line(final=True), flush=True)


async def _main(args: argparse.Namespace) -> None:
    channel = _channel(args)
    stub: search_pb2_grpc.SearchServiceAsyncStub = search_pb2_grpc.SearchServiceStub(channel)
    try:
        if args.load:
            await _load(stub, args)
        else:
            totals = Totals()
            for _ in range(args.calls):
                await _call(stub, args, totals)
            print(totals.line(final=True), flush=True)
    finally:
        await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="xds:///soulspot.capabilities.v1.SearchService")
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--load", type=int, default=0)
    parser.add_argument("--every", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--target-module", default="")
    parser.add_argument("--pki-dir", default="")
    parser.add_argument("--identity", default="client/cli")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
