"""Open the JetStream KV bucket a router store keeps its records in, shared by every router on
the same NATS (the pipeline's runs and leases, the playlist watches): connect as the router,
then find the bucket or create it.

Also what those stores hold and do alike (`KvBucketStore`, their base): where NATS is, the
bucket and this router's owner name, the connection once open, listings, a text as one key
token, and every key under a prefix deleted in one request.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import nats.js.errors as js_errors
from nats.js.api import KeyValueConfig, StorageType

from router.bus.jetstream.connection import abort_connection, connect_nats
from router.bus.jetstream.consumer_lease import new_owner_id
from router.bus.jetstream.kv_listing import list_kv
from services.kit.support.tasks import cancel_within, finish_within

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Sequence

    from nats.aio.client import Client
    from nats.js.kv import KeyValue

_log = logging.getLogger("router.bus.kv")

# The wait between reconnection tries of a store's lost connection.
RECONNECT_WAIT_S = 0.5
# How long closing a store waits on each of its steps (a background loop ending, a last
# write, the connection draining): nats-py's JetStream request timeout, which the stores'
# requests use, so a step NATS answers finishes and one it does not cannot hold a stop.
CLOSE_STEP_S = 5.0


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


class KvBucketStore:
    """The base of a router store in a KV bucket shared by the routers on the same NATS: its
    servers, bucket, copies (`replicas`), the lease of what this router claims and this
    router's owner name; the connection and the bucket once `_open_bucket` made them."""

    # Named in the error of a call made before the store is open.
    what = "the store"

    def __init__(
        self,
        servers: Sequence[str],
        *,
        bucket: str,
        replicas: int,
        lease_s: float,
        owner: str | None,
    ) -> None:
        self.servers = list(servers)
        self.bucket = bucket
        self.replicas = replicas
        self.lease_s = lease_s
        self.owner = owner or new_owner_id()
        self._nc: Client | None = None
        self._kv: KeyValue | None = None
        self.close_step_s = CLOSE_STEP_S

    async def _open_bucket(self, client_name: str, description: str) -> None:
        self._nc, self._kv = await open_kv_bucket(
            self.servers,
            client_name=client_name,
            bucket=self.bucket,
            replicas=self.replicas,
            description=description,
        )

    async def _disconnect(self) -> None:
        """Drain the connection (within `close_step_s`; else close it, else drop its socket)
        and forget the bucket; idempotent."""
        nc, self._nc, self._kv = self._nc, None, None
        if nc is None or await self._close_step("draining the connection", nc.drain()):
            return
        # drain() fails at once while the client reconnects: only close() ends its reconnect
        # loop (it retries forever), else the client would come back with NATS behind a store
        # that closed; dropping the socket alone would leave that loop running.
        if not await self._close_step("closing the connection", nc.close()):
            abort_connection(nc)

    async def _end_loop(self, task: asyncio.Future[Any] | None, what: str) -> None:
        """End a background loop of the store within `close_step_s`, cancelling it again
        while it runs on: one making NATS requests may lose a cancellation (cancel_within)."""
        if not await cancel_within(task, self.close_step_s):
            _log.warning(
                "closing %s: %s did not end within %gs", self.what, what, self.close_step_s
            )

    async def _close_step(self, what: str, step: Awaitable[Any]) -> bool:
        """Await one step of closing within `close_step_s`: True once it finished; a step
        that failed or ran out of time is logged and given up (a stop must end)."""
        try:
            if await finish_within(step, self.close_step_s):
                return True
            _log.warning(
                "closing %s: %s did not finish within %gs", self.what, what, self.close_step_s
            )
        except Exception as err:
            _log.warning("closing %s: %s failed: %s", self.what, what, err)
        return False

    def _require(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError(f"{self.what} is not open")
        return self._kv

    async def _listing(self, pattern: str, *, values: bool = True) -> dict[str, bytes]:
        """Every live key matching `pattern` with its value, in one consumer (the last
        message of each key, deleted ones left out), not one get per key. Not nats-py's keys()
        or watch: their first pass may end before a key just written arrives (see `list_kv`),
        and a key missed here would be taken for one gone (a router's lease, a deferred step,
        a watch)."""
        self._require()
        assert self._nc is not None
        return await list_kv(self._nc.jetstream(), self.bucket, pattern, values=values)
