"""A tiny grpc.health.v1 probe for container health checks and `soulspot up`.

    python -m services.kit.rpc.healthprobe HOST:PORT [--service NAME] [--timeout S]
        [--serving-or-not] [--pki-dir DIR] [--identity KIND/NAME]

Two notions of "healthy", chosen per caller:

* readiness (the default): exit 0 only when the server answers SERVING.
* liveness (`--serving-or-not`): exit 0 when the server answers Check with any status. A module
  whose backend is not configured (no Spotify credentials, no slskd) is running correctly when
  it says NOT_SERVING with a reason; the router routes around it. Its container is alive and
  must not be restarted or block the services that depend on it.

Anything else exits 1: no answer within the timeout, connection refused, or a service name the
server does not know (NOT_FOUND: a misconfigured probe, not a live service). The status or the
error is printed on one line either way, so `podman healthcheck run` and logs say why.

The probe speaks mutual TLS like every process of the mesh: it presents `--identity` (by
default the command line's, client/cli; a container's health check presents the identity of
the process it probes, whose credentials it can read) from `--pki-dir` (by default
SOULSPOT_TLS__PKI_DIR, else `<state dir>/pki`), or plaintext with SOULSPOT_TLS__PLAINTEXT=true.
Missing credentials exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from services.kit.security.identity import CLI, Identity
from services.kit.security.tls import Transport, current_transport, transport_for
from services.kit.support.settings import KitSettings

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


def _bare_channel(address: str, transport: Transport | None) -> grpc.aio.Channel:
    # A bare channel: no kit interceptors, so the probe has no dependency on the mesh context
    # and no retries hide a dead server.
    credentials = transport.channel_credentials() if transport is not None else None
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials)


async def probe(
    address: str,
    service: str = "",
    *,
    deadline_s: float = DEFAULT_TIMEOUT,
    transport: Transport | None = None,
) -> ProbeResult:
    """One grpc.health.v1 Check against `address`; never raises for RPC failures.

    `transport` defaults to the process's (`use_transport`); none means plaintext.
    """
    async with _bare_channel(address, transport or current_transport()) as channel:
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
    parser.add_argument(
        "--pki-dir",
        type=Path,
        default=None,
        help="the mesh's certificates (default: SOULSPOT_TLS__PKI_DIR, else <state dir>/pki)",
    )
    parser.add_argument(
        "--identity",
        default=CLI.uri,
        help="who the probe is, as KIND/NAME or spiffe://soulspot/KIND/NAME (default: client/cli)",
    )
    return parser


def parse_identity(text: str) -> Identity:
    """`module/library` or `spiffe://soulspot/module/library`; ValueError otherwise."""
    found = Identity.parse(text if text.startswith("spiffe://") else f"spiffe://soulspot/{text}")
    if found is None:
        raise ValueError(f"--identity {text!r}: not KIND/NAME (module/library, client/cli)")
    return found


def probe_transport(pki_dir: Path | None, identity: str) -> Transport:
    """The probe's transport: the settings' TLS section, with --pki-dir over its folder."""
    settings = KitSettings()
    section = settings.tls
    if pki_dir is not None:
        section = section.model_copy(update={"pki_dir": pki_dir})
    return transport_for(parse_identity(identity), section, settings.state_dir)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.timeout <= 0:
        print("--timeout must be positive", file=sys.stderr)
        return 2
    try:
        transport = probe_transport(args.pki_dir, args.identity)
    # A settings error (pydantic's ValidationError) is a ValueError too.
    except (OSError, ValueError) as err:
        print(f"{args.address}: {err}", file=sys.stderr)
        return 2
    result = asyncio.run(
        probe(args.address, args.service, deadline_s=args.timeout, transport=transport)
    )
    print(result.describe())
    return 0 if result.ok(serving_or_not=args.serving_or_not) else 1


if __name__ == "__main__":
    sys.exit(main())
