"""Router overhead: the same unary SearchTrack direct to a module, through the router, and
over xDS (a plain grpc.aio channel to `xds:///soulspot.capabilities.v1.SearchService` that
takes its routes from the router's control plane and then calls the module itself), at
concurrency 1 and 64; and, as the floor any proxy written on grpc.aio in Python stands on,
through a bare proxy: a process that forwards the bytes to the module and does nothing else
(no routing, no fallback, no metadata, no metrics, no logs).

`python -m bench.router_bench [--seconds 2] [--runs 3]` starts a router and a module as
separate processes on loopback (logging at WARNING, so the figures measure routing, not
log lines; `--loop uvloop` runs both on uvloop, see services.kit.support.eventloop), drives them
from this process and prints medians of the runs with ratios against direct. Every mode
uses the same driver; each measurement is preceded by a warm-up, and the modes take turns
within each run so that a noisy neighbour hurts them alike. The whole benchmark (this
process and its children) runs niced.

CPU per call is the CPU time that this process, the router and the module together spent
during the measured seconds, divided by the calls: it depends far less on what else the
machine is doing than throughput does. The "client" column is this process's part: where an
xds channel does its routing and balancing, so "xds" against "direct" there is what xDS
costs a caller per call. "xds no retry" (only when named in --modes) is the xds channel with
gRPC's retries turned off, to tell the cost of the retry policy from the rest.

What mutual TLS costs: "direct tls" and "router tls" make the same calls to a second router
and module that speak mutual TLS (certificates of a CA made for the run, the driver calling
as the command line), beside the plaintext pair, in the same run; the table's last lines
compare each with its plaintext twin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from services.kit.rpc.capability_channels import install_bootstrap
from services.kit.rpc.channel import CHANNEL_OPTIONS, SERVER_OPTIONS, wait_for_ready
from services.kit.rpc.xds_bootstrap import xds_target
from services.kit.security.ca import ensure_identities, identity_files
from services.kit.security.identity import CLI, ROUTER, Identity
from services.kit.security.tls import Transport
from services.kit.support import eventloop
from soulspot.capabilities.v1 import search_pb2, search_pb2_grpc
from soulspot.common.v1 import references_pb2
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

SEARCH_SERVICE = "soulspot.capabilities.v1.SearchService"
SEARCH = f"/{SEARCH_SERVICE}/SearchTrack"
REQUEST = search_pb2.SearchTrackRequest(query="artist - title", limit=5)
CONCURRENCIES = (1, 64)
MODES = ("direct", "router", "bare proxy", "xds", "direct tls", "router tls")
TLS_MODES = {"direct tls": "direct", "router tls": "router"}
# Not run unless named in --modes: where an xds channel's cost per call goes. "xds no retry"
# is the same channel with gRPC's retries off (the router's routes retry idempotent
# capabilities, and a retryable call keeps a copy of what it sent).
DIAGNOSTIC_MODES = ("xds no retry",)
MODULE_NAME = "bench-module"
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- the module process ------------------------------------------------------------------


class _Search(search_pb2_grpc.SearchServiceServicer):
    async def SearchTrack(
        self, request: search_pb2.SearchTrackRequest, context: Any
    ) -> search_pb2.SearchTrackResponse:
        return search_pb2.SearchTrackResponse(
            results=[
                search_pb2.SearchResult(
                    track=references_pb2.TrackReference(title=request.query, artist="Bench"),
                    score=1.0,
                    source="bench",
                )
            ]
        )


async def _serve_module(port: int, router: str, log_level: str) -> None:
    from services.kit.module.registration import RouterRegistration
    from services.kit.observability.logging import setup_logging
    from services.kit.rpc.server import KitServer
    from services.kit.security.tls import transport_for, use_transport
    from services.kit.support.settings import KitSettings

    setup_logging(MODULE_NAME, log_level)
    # As a module of the mesh would: mutual TLS, or plaintext when SOULSPOT_TLS__* says.
    settings = KitSettings()
    use_transport(transport_for(Identity.module(MODULE_NAME), settings.tls, settings.state_dir))
    server = KitServer(MODULE_NAME, f"127.0.0.1:{port}", validate_requests=True)
    servicer = _Search()
    server.add_service(
        lambda s: search_pb2_grpc.add_SearchServiceServicer_to_server(servicer, s),
        "soulspot.capabilities.v1.SearchService",
    )
    await server.start()
    announcement = router_pb2.ModuleAnnouncement(
        name=MODULE_NAME,
        address=server.address,
        capabilities=[router_pb2.CapabilityRegistration(capability="search.track", priority=1)],
    )
    registration = RouterRegistration(router, announcement)
    await registration.start()
    try:
        await server.serve()
    finally:
        await registration.stop()


async def _serve_bare_proxy(port: int, target: str) -> None:
    """The floor: a grpc.aio server whose one handler awaits the same call on a channel to
    the module, bytes in and bytes out, with no interceptor."""
    channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    forward: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(SEARCH)

    async def search(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        response: bytes = await forward(request, timeout=context.time_remaining())
        return response

    server = grpc.aio.server(options=SERVER_OPTIONS)
    service, method = SEARCH.strip("/").split("/")
    server.add_registered_method_handlers(
        service, {method: grpc.unary_unary_rpc_method_handler(search)}
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# -- measuring ---------------------------------------------------------------------------


@dataclass
class Result:
    throughput: float
    p50_ms: float
    p99_ms: float
    # CPU seconds per call (client + router + module), the router's share of it, and the
    # client's (where an xds channel's routing and balancing run).
    cpu_us: float
    router_cpu_us: float
    client_cpu_us: float


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a child has used so far; 0 without /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of stat(5), counted after the ")" that ends the command name.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(
    call: Callable[[], Awaitable[object]],
    concurrency: int,
    seconds: float,
    router_pid: int,
    module_pid: int,
) -> Result:
    latencies: list[float] = []
    stop_at = 0.0

    async def worker(record: bool) -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call()
            if record:
                latencies.append(time.perf_counter() - started)

    stop_at = time.perf_counter() + min(0.5, seconds / 4)  # warm-up: connections, caches
    await asyncio.gather(*(worker(False) for _ in range(concurrency)))
    router_before = _process_cpu(router_pid)
    client_before = _own_cpu()
    cpu_before = client_before + router_before + _process_cpu(module_pid)
    began = time.perf_counter()
    stop_at = began + seconds
    await asyncio.gather(*(worker(True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    router_used = _process_cpu(router_pid) - router_before
    client_used = _own_cpu() - client_before
    cpu_used = _own_cpu() + _process_cpu(router_pid) + _process_cpu(module_pid) - cpu_before
    latencies.sort()
    calls = len(latencies)
    return Result(
        throughput=calls / elapsed,
        p50_ms=latencies[calls // 2] * 1000,
        p99_ms=latencies[min(calls - 1, int(calls * 0.99))] * 1000,
        cpu_us=cpu_used / calls * 1e6,
        router_cpu_us=router_used / calls * 1e6,
        client_cpu_us=client_used / calls * 1e6,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_pair(
    folder: Path, env: dict[str, str]
) -> tuple[str, str, subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """A router and the bench module registered with it, on fresh ports, state in `folder`."""
    router_address = f"127.0.0.1:{_free_port()}"
    module_port = _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    env = {**env, "SOULSPOT_ROUTER__ADDRESS": router_address, "SOULSPOT_STATE_DIR": str(folder)}
    router = subprocess.Popen([sys.executable, "-m", "router"], env=env)
    module = subprocess.Popen(
        [sys.executable, "-m", "bench.router_bench", "--serve-module", str(module_port)],
        env=env,
    )
    return router_address, f"127.0.0.1:{module_port}", router, module


def _tls_env(folder: Path) -> dict[str, str]:
    """Certificates for the TLS pair and the driver, and a policy that lets the bench module
    register its one capability (a TLS router grants registration by verified identity)."""
    pki_dir = folder / "pki"
    ensure_identities(pki_dir, [ROUTER, CLI, Identity.module(MODULE_NAME)])
    policy = folder / "policy.yaml"
    grants = {MODULE_NAME: {"capabilities": {"search.track": 10}}}
    policy.write_text(json.dumps({"modules": grants}))  # JSON is YAML
    return {
        "SOULSPOT_TLS__PLAINTEXT": "false",
        "SOULSPOT_TLS__PKI_DIR": str(pki_dir),
        "SOULSPOT_ROUTER__POLICY_FILE": str(policy),
    }


def _run(
    seconds: float,
    runs: int,
    modes: Sequence[str],
    concurrencies: Sequence[int],
    log_level: str,
    loop: str,
) -> dict[tuple[str, int], list[Result]]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **{k: v for k, v in os.environ.items() if k != "SOULSPOT_CONFIG"},
            # The dashboard is not part of the hop being measured; port 0 keeps runs apart.
            "SOULSPOT_ROUTER__HTTP_ADDRESS": "127.0.0.1:0",
            "SOULSPOT_LOG_LEVEL": log_level,
            eventloop.ENV_VAR: loop,
        }
        plain_env = {**env, "SOULSPOT_TLS__PLAINTEXT": "true"}
        router_address, module_address, router, module = _start_pair(Path(tmp) / "plain", plain_env)
        bare_address = f"127.0.0.1:{_free_port()}"
        bare = subprocess.Popen(
            [
                sys.executable,
                *("-m", "bench.router_bench", "--serve-bare-proxy", bare_address.split(":")[1]),
            ],
            env={**plain_env, "SOULSPOT_BENCH_MODULE": module_address},
        )
        processes: list[subprocess.Popen[bytes]] = [bare, module, router]
        tls: TlsPair | None = None
        if any(m in TLS_MODES for m in modes):
            tls_folder = Path(tmp) / "tls"
            tls_folder.mkdir()
            tls_env = _tls_env(tls_folder)
            t_router_address, t_module_address, t_router, t_module = _start_pair(
                tls_folder, {**env, **tls_env}
            )
            processes += [t_module, t_router]
            pki_dir = Path(tls_env["SOULSPOT_TLS__PKI_DIR"])
            tls = TlsPair(
                Targets(t_router_address, t_module_address, ""),
                Pids(t_router.pid, t_module.pid, 0),
                Transport(CLI, identity_files(pki_dir, CLI)),
            )
        try:
            return asyncio.run(
                _ready_then_drive(
                    Targets(router_address, module_address, bare_address),
                    seconds,
                    runs,
                    modes,
                    concurrencies,
                    Pids(router.pid, module.pid, bare.pid),
                    tls,
                )
            )
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()


@dataclass(frozen=True)
class Targets:
    router: str
    module: str
    bare: str


@dataclass(frozen=True)
class Pids:
    router: int
    module: int
    bare: int


@dataclass(frozen=True)
class TlsPair:
    """The router and module that speak mutual TLS, and how the driver calls them."""

    targets: Targets
    pids: Pids
    client: Transport


async def _ready_then_drive(
    targets: Targets,
    seconds: float,
    runs: int,
    modes: Sequence[str],
    concurrencies: Sequence[int],
    pids: Pids,
    tls: TlsPair | None = None,
) -> dict[tuple[str, int], list[Result]]:
    await wait_for_ready(targets.router, 30)
    await wait_for_ready(targets.module, 30)
    if tls is not None:
        await wait_for_ready(tls.targets.router, 30, transport=tls.client)
        await wait_for_ready(tls.targets.module, 30, transport=tls.client)
    return await _drive(targets, seconds, runs, modes, concurrencies, pids, tls)


def _tls_channel(target: str, client: Transport) -> grpc.aio.Channel:
    credentials = client.channel_credentials()
    assert credentials is not None
    return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)


async def _until_routed(stub: search_pb2_grpc.SearchServiceAsyncStub, what: str) -> None:
    """Until the search is answered (the module has registered with the router, and for xDS
    the router has sent the client its routes)."""
    for _ in range(200):
        try:
            await stub.SearchTrack(REQUEST, timeout=2)
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} never reached the module")


async def _drive(
    targets: Targets,
    seconds: float,
    runs: int,
    modes: Sequence[str],
    concurrencies: Sequence[int],
    pids: Pids,
    tls: TlsPair | None = None,
) -> dict[tuple[str, int], list[Result]]:
    results: dict[tuple[str, int], list[Result]] = {}
    # One channel per target, same options: the modes differ only in where the call goes.
    module_channel = grpc.aio.insecure_channel(targets.module, options=CHANNEL_OPTIONS)
    router_channel = grpc.aio.insecure_channel(targets.router, options=CHANNEL_OPTIONS)
    bare_channel = grpc.aio.insecure_channel(targets.bare, options=CHANNEL_OPTIONS)
    tls_channels: list[grpc.aio.Channel] = []
    if tls is not None:
        tls_channels = [
            _tls_channel(tls.targets.module, tls.client),
            _tls_channel(tls.targets.router, tls.client),
        ]
    # The driver is a plaintext client of the plaintext router: its xDS client takes routes
    # from that router (the bootstrap is process-wide, read when this first xds channel
    # connects). Same options as the other channels, no credentials: like "direct".
    install_bootstrap(targets.router, CLI, None)
    xds_channel = grpc.aio.insecure_channel(xds_target(SEARCH_SERVICE), options=CHANNEL_OPTIONS)
    no_retry_channel = grpc.aio.insecure_channel(
        xds_target(SEARCH_SERVICE), options=(*CHANNEL_OPTIONS, ("grpc.enable_retries", 0))
    )
    try:
        direct = search_pb2_grpc.SearchServiceStub(module_channel)
        routed = search_pb2_grpc.SearchServiceStub(router_channel)
        bare = search_pb2_grpc.SearchServiceStub(bare_channel)
        over_xds = search_pb2_grpc.SearchServiceStub(xds_channel)
        no_retry = search_pb2_grpc.SearchServiceStub(no_retry_channel)
        # The bare proxy has no health service: one call that waits says it is up.
        await bare.SearchTrack(REQUEST, timeout=30, wait_for_ready=True)
        await _until_routed(routed, "the router")
        if "xds" in modes:
            await _until_routed(over_xds, "the xds channel")
        if "xds no retry" in modes:
            await _until_routed(no_retry, "the xds channel without retries")
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "direct": lambda: direct.SearchTrack(REQUEST, timeout=10),
            "router": lambda: routed.SearchTrack(REQUEST, timeout=10),
            "bare proxy": lambda: bare.SearchTrack(REQUEST, timeout=10),
            "xds": lambda: over_xds.SearchTrack(REQUEST, timeout=10),
            "xds no retry": lambda: no_retry.SearchTrack(REQUEST, timeout=10),
        }
        if tls_channels:
            direct_tls = search_pb2_grpc.SearchServiceStub(tls_channels[0])
            routed_tls = search_pb2_grpc.SearchServiceStub(tls_channels[1])
            await _until_routed(routed_tls, "the TLS router")
            calls["direct tls"] = lambda: direct_tls.SearchTrack(REQUEST, timeout=10)
            calls["router tls"] = lambda: routed_tls.SearchTrack(REQUEST, timeout=10)
        for run in range(runs):
            for concurrency in concurrencies:
                # Rotate the order each run: no mode always follows the same one.
                shift = run % len(modes)
                for mode in (*modes[shift:], *modes[:shift]):
                    # The "router" CPU column is whichever proxy the mode goes through.
                    used = tls.pids if tls is not None and mode in TLS_MODES else pids
                    proxy_pid = used.bare if mode == "bare proxy" else used.router
                    result = await _measure(
                        calls[mode], concurrency, seconds, proxy_pid, used.module
                    )
                    results.setdefault((mode, concurrency), []).append(result)
    finally:
        await no_retry_channel.close()
        await xds_channel.close()
        await module_channel.close()
        await router_channel.close()
        await bare_channel.close()
        for channel in tls_channels:
            await channel.close()
    return results


def _print(
    results: dict[tuple[str, int], list[Result]],
    runs: int,
    modes: Sequence[str],
    concurrencies: Sequence[int],
) -> None:
    print(f"router_bench: unary SearchTrack, medians of {runs} runs, {os.cpu_count()} cpus")
    header = f"{'mode':<12} {'c':>3} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
    header += f"{'x direct':>9} {'p50 +ms':>8} {'cpu us':>7} {'router':>7} {'client':>7}"
    print(header)
    for concurrency in concurrencies:
        base = results.get(("direct", concurrency))
        base_tp = statistics.median(r.throughput for r in base) if base else float("nan")
        base_p50 = statistics.median(r.p50_ms for r in base) if base else float("nan")
        for mode in modes:
            rows = results[(mode, concurrency)]
            tp = statistics.median(r.throughput for r in rows)
            p50 = statistics.median(r.p50_ms for r in rows)
            p99 = statistics.median(r.p99_ms for r in rows)
            cpu = statistics.median(r.cpu_us for r in rows)
            router_cpu = statistics.median(r.router_cpu_us for r in rows)
            client_cpu = statistics.median(r.client_cpu_us for r in rows)
            print(
                f"{mode:<12} {concurrency:>3} {tp:>9.0f} {p50:>8.3f} {p99:>8.3f} "
                f"{tp / base_tp:>9.2f} {p50 - base_p50:>+8.3f} {cpu:>7.0f} {router_cpu:>7.0f} "
                f"{client_cpu:>7.0f}"
            )
    print(
        "cpu us: client + proxy + module CPU per call; router: the proxy's part; "
        "client: this driver's"
    )
    overheads = []
    for concurrency in concurrencies:
        ours, bare = results.get(("router", concurrency)), results.get(("bare proxy", concurrency))
        if ours and bare:
            ratio = statistics.median(r.router_cpu_us for r in ours) / statistics.median(
                r.router_cpu_us for r in bare
            )
            overheads.append(f"{ratio:.2f}x at c={concurrency}")
    if overheads:
        print(f"router CPU per call vs the bare proxy's: {', '.join(overheads)}")
    _print_tls_cost(results, concurrencies)
    print("targets: router >= 0.50x direct (c=1 and c=64), router p50 <= +0.5 ms at c=1,")
    print("         xds >= 0.95x direct (c=1 and c=64), xds p50 <= +0.05 ms")


def _print_tls_cost(
    results: dict[tuple[str, int], list[Result]], concurrencies: Sequence[int]
) -> None:
    """Each TLS mode against its plaintext twin: calls/s ratio and extra CPU per call."""
    for concurrency in concurrencies:
        for mode, twin in TLS_MODES.items():
            ours, plain = results.get((mode, concurrency)), results.get((twin, concurrency))
            if not ours or not plain:
                continue
            ratio = statistics.median(r.throughput for r in ours) / statistics.median(
                r.throughput for r in plain
            )
            extra = statistics.median(r.cpu_us for r in ours) - statistics.median(
                r.cpu_us for r in plain
            )
            print(
                f"tls cost, {twin} c={concurrency}: {ratio:.2f}x the plaintext calls/s, "
                f"{extra:+.0f} us CPU per call"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.router_bench")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated, of {', '.join((*MODES, *DIAGNOSTIC_MODES))}",
    )
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCIES)))
    parser.add_argument("--nice", type=int, default=10, help="niceness for all processes")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--loop",
        choices=eventloop.LOOPS,
        default=eventloop.DEFAULT_LOOP,
        help="event loop of the router and the module (this driver keeps asyncio's)",
    )
    parser.add_argument("--serve-module", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare-proxy", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.serve_bare_proxy:
        target = os.environ["SOULSPOT_BENCH_MODULE"]
        eventloop.run(_serve_bare_proxy(args.serve_bare_proxy, target))
        return
    if args.serve_module:
        router = os.environ.get("SOULSPOT_ROUTER__ADDRESS", "127.0.0.1:50051")
        log_level = os.environ.get("SOULSPOT_LOG_LEVEL", "WARNING")
        eventloop.run(_serve_module(args.serve_module, router, log_level))
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if args.nice:
        # Inherited by the router and the module: every process of the mesh runs alike.
        os.nice(args.nice)
    results = _run(args.seconds, args.runs, modes, concurrencies, args.log_level, args.loop)
    print(f"router and module event loop: {args.loop}")
    _print(results, args.runs, modes, concurrencies)


if __name__ == "__main__":
    main()
