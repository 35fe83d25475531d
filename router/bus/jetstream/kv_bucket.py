"""Open the JetStream KV bucket a router store keeps its records in, shared by every router on
the same NATS (the pipeline's runs and leases, the playlist watches): connect as the router,
then find the bucket or create it.

Also what those stores write alike: a text as one key token, and every key under a prefix
deleted in one request.
"""

from __future__ import annotations

import base64
import contextlib
from typing import TYPE_CHECKING

import nats.js.errors as js_errors
from nats.js.api import KeyValueConfig, StorageType

from router.bus.jetstream.connection import connect_nats

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nats.aio.client import Client
    from nats.js.kv import KeyValue

# The wait between reconnection tries of a store's lost connection.
RECONNECT_WAIT_S = 0.5


def key_token(text: str) -> str:
    """`text` as one KV key token: base64url without padding (letters, digits, - and _)."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def from_token(token: str) -> str:
    """The text `key_token` made `token` from."""
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


async def open_kv_bucket(
    servers: Sequence[str],
    *,
    client_name: str,
    bucket: str,
    replicas: int,
    description: str,
) -> tuple[Client, KeyValue]:
    """A NATS connection named `client_name` and the bucket on it, created (one value of
    history a key, on file) when it is not there yet."""
    # Mutual TLS as the router whenever the process has TLS, as the event store connects.
    nc = await connect_nats(
        servers,
        name=client_name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=RECONNECT_WAIT_S,
    )
    js = nc.jetstream()
    try:
        try:
            kv = await js.key_value(bucket)
        except js_errors.BucketNotFoundError:
            # Every router may try at once; creating an identical bucket is idempotent.
            kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    history=1,
                    storage=StorageType.FILE,
                    replicas=replicas,
                    description=description,
                )
            )
    except BaseException:
        # The caller holds nothing to close yet: the connection goes here.
        with contextlib.suppress(Exception):
            await nc.close()
        raise
    return nc, kv


async def purge_keys(nc: Client, bucket: str, prefix: str) -> None:
    """Delete every key of `bucket` under `prefix` (which ends in a dot), in one request."""
    with contextlib.suppress(js_errors.NotFoundError):
        await nc.jetstream().purge_stream(f"KV_{bucket}", subject=f"$KV.{bucket}.{prefix}>")
