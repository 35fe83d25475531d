"""A KV store closed while NATS is out of reach leaves no connection behind: its client, which
reconnects forever, is closed rather than left to reconnect once the server is back."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.watches.kv_store import KvWatchStore
from tests.helpers.router import eventually

if TYPE_CHECKING:
    from tests.helpers.nats_server import NatsServerProcess

# Far below the per-test timeout; the client notices a killed server within a moment.
RECONNECTING_WITHIN_S = 20.0


async def test_a_store_closed_while_its_client_reconnects_closes_the_client(
    nats_server: NatsServerProcess,
) -> None:
    store = KvWatchStore([nats_server.url], bucket="closed_in_outage")
    store.close_step_s = 1.0
    await store.open()
    nc = store._nc
    assert nc is not None
    nats_server.kill()
    await eventually(lambda: nc.is_reconnecting, timeout=RECONNECTING_WITHIN_S)

    await store.close()

    # drain() refuses a reconnecting client; a client only dropped, not closed, would
    # reconnect to the server once back.
    assert nc.is_closed
