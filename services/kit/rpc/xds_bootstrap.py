"""The xDS bootstrap a proxyless gRPC client needs to take its routes from the router.

The router serves xDS (ADS, v3) on its own gRPC port: one Listener per capability service,
named after it. A client dials `xds:///soulspot.capabilities.v1.DownloadService`, gRPC's xDS
client reads the bootstrap (the JSON built here) from `GRPC_XDS_BOOTSTRAP` (a file) or
`GRPC_XDS_BOOTSTRAP_CONFIG` (the text itself) when the process makes its first xds channel,
asks the router for listeners, routes, clusters and endpoints, and then calls modules
directly: it balances, fails over between priorities and retries by itself.

What a client must know (the kit's xds:/// channels and any plain grpcio client):

- **The bootstrap is process-global.** gRPC reads it once, at the first xds channel; every
  later xds channel of the process shares that xDS client. Set the environment before then.
- **Several routers.** A router address setting with several routers (comma-separated)
  gives the bootstrap one `xds_servers` entry per router, in that order. gRPC (1.85, gRFC
  A71 xDS fallback, on without any environment variable) talks to the first; when that one
  cannot be reached it takes its resources from the next, and goes back to the first once
  it answers again. A client whose first router dies after it had its resources keeps
  those (and calls keep going to the modules) rather than falling back: resources it did
  not have yet are asked of the next router.
- **Control plane credentials follow the mesh's.** With TLS the bootstrap's `channel_creds`
  is `{"type": "tls", "config": {ca_certificate_file, certificate_file, private_key_file}}`
  (gRFC A65): the client presents its own mesh certificate to the router, which checks it
  like any other call and uses the verified identity as the node id. With plaintext it is
  `{"type": "insecure"}`.
- **Data plane credentials:** pass `xds_channel_credentials(transport)` (below), which is
  `grpc.xds_channel_credentials(fallback)` with the mesh's mutual TLS credentials as the
  fallback; the router's clusters carry no xDS security configuration, so the fallback is
  what every call uses. TLS checks the server's certificate against the channel's authority,
  which for `xds:///NAME` is the listener name, a name no certificate carries. So a secure
  xds channel also passes `xds_channel_options(transport)`: `grpc.ssl_target_name_override`
  set to `TLS_TARGET_NAME` ("localhost"), a DNS name every mesh certificate carries (see
  services/kit/security/ca.py). The chain is still verified against the mesh CA, so only a
  process holding a mesh certificate can answer.
- **Plaintext:** `grpc.aio.insecure_channel("xds:///NAME")` (or `xds_channel_credentials`
  of a plaintext transport, which is insecure credentials) with an insecure bootstrap.
- **Named-module calls:** send `x-soulspot-target-module: NAME` metadata; the route table
  sends such a call to that module's own cluster (a module that does not serve the method:
  UNAVAILABLE, never another module).
- **What the client does by itself:** highest module priority first (xDS priority 0), equal
  priorities round robin, an unhealthy module (not routable, NOT_SERVING, required modules
  down, breaker open) skipped; idempotent capabilities retried on UNAVAILABLE,
  RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED (gRPC's retry policy has no UNIMPLEMENTED). With
  the router away, clients keep the last configuration. A service the router does not know
  fails with UNAVAILABLE once gRPC gives up waiting for it (15 s).

Verified (tests/e2e/router/test_xds_e2e.py): over mutual TLS with this bootstrap and these
credentials and options, calls reach modules directly, and a kill -9 of the serving module
under load fails no call.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import grpc
import grpc.experimental

from services.kit.rpc.targets import split_addresses

if TYPE_CHECKING:
    from pathlib import Path

    from services.kit.security.ca import IdentityFiles
    from services.kit.security.tls import Transport

# The scheme a client dials: xds:///<capability service>.
XDS_SCHEME = "xds:///"
# The environment variables gRPC reads the bootstrap from (a file path, or the JSON itself).
BOOTSTRAP_FILE_ENV = "GRPC_XDS_BOOTSTRAP"
BOOTSTRAP_CONFIG_ENV = "GRPC_XDS_BOOTSTRAP_CONFIG"
# A DNS name in every mesh certificate (services/kit/security/ca.py LOOPBACK_DNS); TLS on an
# xds channel checks it instead of the listener name.
TLS_TARGET_NAME = "localhost"
# The node's cluster name: the mesh, so control-plane logs say where a client belongs.
NODE_CLUSTER = "soulspot"


def xds_target(service: str) -> str:
    """The target a client dials for a capability service, e.g.
    `xds:///soulspot.capabilities.v1.DownloadService`."""
    return f"{XDS_SCHEME}{service}"


def channel_creds(files: IdentityFiles | None) -> list[dict[str, Any]]:
    """The bootstrap's `channel_creds` for the control plane: mutual TLS with `files`, or
    insecure when there are none (a plaintext mesh)."""
    if files is None:
        return [{"type": "insecure"}]
    return [
        {
            "type": "tls",
            "config": {
                "ca_certificate_file": str(files.ca.resolve()),
                "certificate_file": str(files.cert.resolve()),
                "private_key_file": str(files.key.resolve()),
            },
        }
    ]


def xds_servers(router_address: str, files: IdentityFiles | None) -> list[dict[str, Any]]:
    """One xDS server per router of a router address setting (`host:port`, or several
    comma-separated), in the order given: gRPC falls back from each to the next."""
    addresses = split_addresses(router_address)
    if not addresses:
        raise ValueError("the router address names no router")
    return [
        {
            "server_uri": address,
            "channel_creds": channel_creds(files),
            "server_features": ["xds_v3"],
        }
        for address in addresses
    ]


def bootstrap_config(
    router_address: str,
    *,
    node_id: str,
    files: IdentityFiles | None,
) -> dict[str, Any]:
    """The bootstrap as a dict: each router of `router_address` as an xDS server (the first
    first, the others as its fallbacks), with credentials that follow the mesh's, and this
    client's node.

    `node_id` is informational: a router with TLS names the node by the caller's verified
    identity whatever the client writes here; use the identity's URI.
    """
    node = {"id": node_id, "cluster": NODE_CLUSTER}
    return {"xds_servers": xds_servers(router_address, files), "node": node}


def bootstrap_json(router_address: str, *, node_id: str, files: IdentityFiles | None) -> str:
    """The bootstrap as JSON text (for a file, or for GRPC_XDS_BOOTSTRAP_CONFIG)."""
    return json.dumps(
        bootstrap_config(router_address, node_id=node_id, files=files), indent=2, sort_keys=True
    )


def bootstrap_for(router_address: str, transport: Transport) -> str:
    """The bootstrap JSON for the process that is `transport`: its identity as the node id,
    its certificate files (or insecure, when the transport is plaintext)."""
    return bootstrap_json(router_address, node_id=transport.identity.uri, files=transport.files)


def write_bootstrap(path: Path, text: str) -> Path:
    """Write a bootstrap file readable by its owner only (it names key files, not keys, but a
    bootstrap is per process), and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return path


def xds_channel_credentials(transport: Transport | None) -> grpc.ChannelCredentials:
    """Credentials for an `xds:///` channel: xDS credentials whose fallback is the mesh's
    mutual TLS (or insecure credentials for a plaintext transport)."""
    fallback = transport.channel_credentials() if transport is not None else None
    if fallback is None:
        fallback = grpc.experimental.insecure_channel_credentials()  # type: ignore[no-untyped-call]
    return grpc.xds_channel_credentials(fallback)


def xds_channel_options(transport: Transport | None) -> list[tuple[str, str]]:
    """Channel options an `xds:///` channel needs with `transport`: the TLS name to check
    (every mesh certificate carries it), none for plaintext."""
    if transport is None or not transport.secure:
        return []
    return [("grpc.ssl_target_name_override", TLS_TARGET_NAME)]
