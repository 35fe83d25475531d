"""List the live keys of a JetStream KV bucket under a pattern, with their values, without
missing a key that exists: the one way the router lists a bucket (the bus's consumer state and
queued replays, the pipeline's runs, leases and deferred index, the playlist watches).

nats-py's `KeyValue.watch` (and `keys()`, built on it) decides that its first pass is over
from a consumer-info request made after the push consumer starts delivering: the server counts
a message as delivered as soon as it is queued to the client, so that request may answer
"nothing pending, nothing delivered" while the only key is still on its way, and the watch
reports an empty bucket. A listing then misses a key another router just wrote (observed as
one router listing no watched playlist while the other listed it, about once in a hundred
add-then-list rounds).

Here the consumer is a pull consumer created by this module: how many messages the listing must
read is the `num_pending` of the consumer's creation answer, fixed before anything is
delivered, and the pass is over at the message that says none follow it (or, should a purge
take the rest meanwhile, when the consumer says none are pending). The consumer is deleted at
the end rather than left to expire.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

# Messages asked for per pull: a listing of a few thousand tracks takes a handful of round trips.
BATCH = 256
# How long one pull waits for messages the consumer still counts as pending.
FETCH_WAIT_S = 2.0
# A consumer this module failed to delete (the connection went) is removed by the server then.
INACTIVE_S = 60.0
# The headers by which a KV message says its key is gone (a delete, a purge, a server marker).
_KV_OPERATION = "KV-Operation"
_GONE_OPERATIONS = ("DEL", "PURGE")
_MARKER_REASON = "Nats-Marker-Reason"


def is_gone(msg: Msg) -> bool:
    """Whether a KV message says its key is gone (deleted, purged, removed by the server)."""
    headers = msg.headers or {}
    return headers.get(_KV_OPERATION) in _GONE_OPERATIONS or _MARKER_REASON in headers


async def list_kv(
    js: JetStreamContext, bucket: str, pattern: str, *, values: bool = True
) -> dict[str, bytes]:
    """Every live key of `bucket` matching `pattern` with its value (b"" when not `values`):
    the last message of each key, deleted keys left out, in one consumer."""
    prefix = f"$KV.{bucket}."
    stream = f"KV_{bucket}"
    info = await js.add_consumer(
        stream,
        ConsumerConfig(
            filter_subject=prefix + pattern,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            headers_only=not values,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=INACTIVE_S,
        ),
    )
    found: dict[str, bytes] = {}
    try:
        if not info.num_pending:
            return found
        sub = await js.pull_subscribe_bind(consumer=info.name, stream=stream)
        try:
            while True:
                try:
                    msgs = await sub.fetch(BATCH, timeout=FETCH_WAIT_S)
                except TimeoutError:  # nats-py's own is one
                    # Nothing came: done if a purge took what was left, else pull again.
                    if not (await sub.consumer_info()).num_pending:
                        return found
                    continue
                for msg in msgs:
                    key = msg.subject.removeprefix(prefix)
                    # A key written again or deleted during the pass comes again, later.
                    if is_gone(msg):
                        found.pop(key, None)
                    else:
                        found[key] = msg.data if values else b""
                    if msg.metadata.num_pending == 0:
                        return found
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    finally:
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, info.name)
