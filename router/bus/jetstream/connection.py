"""Connect to NATS as this process's mesh identity: mutual TLS whenever the process has TLS.

The event store and the pipeline's run store both connect through `connect_nats`. With the
process's transport secure (the router's, set by its entry point), the connection presents the
router's mesh certificate and checks the server's against the mesh CA and the host dialled;
the mesh's NATS nodes (services/kit/security/nats_node.py) take only router identities. Only a
process on a plaintext mesh (SOULSPOT_TLS__PLAINTEXT=true) connects without TLS.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

import nats

from services.kit.security.tls import Transport, current_transport

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nats.aio.client import Client


def nats_tls_context(transport: Transport | None) -> ssl.SSLContext | None:
    """A client TLS context presenting `transport`'s certificate and trusting only the mesh
    CA, or None for a plaintext transport (or none)."""
    if transport is None or transport.files is None:
        return None
    files = transport.files
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


async def connect_nats(
    servers: Sequence[str],
    *,
    transport: Transport | None = None,
    **options: Any,
) -> Client:
    """`nats.connect` to `servers` as `transport` (default: this process's), with `options`.

    With TLS the server's certificate is checked against each URL's host: the mesh's NATS
    certificate carries the nodes' names, `localhost` and the loopback addresses."""
    context = nats_tls_context(transport if transport is not None else current_transport())
    if context is not None:
        options["tls"] = context
    return await nats.connect(servers=list(servers), **options)
