"""A tiny grpc.health.v1 probe for container health checks and `soulspot up`.

    python -m services.kit.rpc.healthprobe HOST:PORT [--service NAME] [--timeout S]
        [--serving-or-not]

Two notions of "healthy", chosen per caller:

* readiness (the default): exit 0 only when the server answers SERVING.
* liveness (`--serving-or-not`): exit 0 when the server answers Check with any status. A module
  whose backend is not configured (no Spotify credentials, no slskd) is running correctly when
  it says NOT_SERVING with a reason; the router routes around it. Its container is alive and
  must not be restarted or block the services that depend on it.

Anything else exits 1: no answer within the timeout, connection refused, or a service name the
server does not know (NOT_FOUND: a misconfigured probe, not a live service). The status or the
error is printed on one line either way, so `podman healthcheck run` and logs say why.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2

HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
DEFAULT_TIMEOUT = 3.0


@dataclass(frozen=True)
class ProbeResult:
    """What one Check said: `status` is the enum name when the server answered, else None."""

    address: str
    service: str
    status: str | None
    error: str = ""

    @property
    def answered(self) -> bool:
        return self.status is not None

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"

    def ok(self, *, serving_or_not: bool) -> bool:
        # SERVICE_UNKNOWN only comes from Watch, but treat it like NOT_FOUND if a server says it.
        if serving_or_not:
            return self.answered and self.status != "SERVICE_UNKNOWN"
        return self.serving

    def describe(self) -> str:
        target = f"{self.address} service={self.service!r}" if self.service else self.address
        if self.answered:
            return f"{target}: {self.status}"
        return f"{target}: no answer ({self.error})"


async def probe(
    address: str, service: str = "", *, deadline_s: float = DEFAULT_TIMEOUT
) -> ProbeResult:
    """One grpc.health.v1 Check against `address`; never raises for RPC failures."""
    # A bare channel: no kit interceptors, so the probe has no dependency on the mesh context
    # and no retries hide a dead server.
    async with grpc.aio.insecure_channel(address) as channel:
        check = channel.unary_unary(
            HEALTH_CHECK_METHOD,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            reply = await check(health_pb2.HealthCheckRequest(service=service), timeout=deadline_s)
        except grpc.aio.AioRpcError as err:
            code = err.code()
            name = code.name if code is not None else "UNKNOWN"
            return ProbeResult(address, service, None, f"{name}: {err.details() or ''}".strip())
    status_name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return ProbeResult(address, service, status_name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.kit.rpc.healthprobe",
        description="grpc.health.v1 Check; exit 0 when healthy, 1 otherwise.",
    )
    parser.add_argument("address", help="HOST:PORT of the gRPC server")
    parser.add_argument("--service", default="", help="service name to check (default: server)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the answer"
    )
    parser.add_argument(
        "--serving-or-not",
        action="store_true",
        help="liveness: exit 0 when the server answers at all (SERVING or NOT_SERVING)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.timeout <= 0:
        print("--timeout must be positive", file=sys.stderr)
        return 2
    result = asyncio.run(probe(args.address, args.service, deadline_s=args.timeout))
    print(result.describe())
    return 0 if result.ok(serving_or_not=args.serving_or_not) else 1


if __name__ == "__main__":
    sys.exit(main())
