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

A listing that meets a JetStream cluster mid-failover (a node down, a stream's leader moving:
"no responders", a timeout, its consumer lost with the node that held it) starts over with a
new consumer, under the mesh's one backoff, until `LIST_DEADLINE_S` has passed; only then does
the error reach the caller, whose loop tries again at its next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import nats.errors as nats_errors
import nats.js.errors as js_errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.kit.support.backoff import Backoff, BackoffPolicy, pause

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

# Messages asked for per pull: a listing of a few thousand tracks takes a handful of round trips.
BATCH = 256
# How long one pull waits for messages the consumer still counts as pending.
FETCH_WAIT_S = 2.0
# A consumer this module failed to delete (the connection went) is removed by the server then.
INACTIVE_S = 60.0
# How long a consumer's deletion may hold the listing up: one not deleted expires (INACTIVE_S).
DELETE_WAIT_S = 2.0
# How long a listing goes on trying through a failover: a JetStream leader election takes
# seconds, and a caller's loop tries again at its next round after this.
LIST_DEADLINE_S = 30.0
# The waits between tries: short at first (a moved leader answers within a second or two), full
# jitter as the tries are bounded by LIST_DEADLINE_S (the routers' listings spread out).
RETRY = BackoffPolicy(initial_s=0.1, multiplier=2.0, cap_s=2.0, jitter="full")
# JetStream's error code for a consumer that is not there (here: lost with its node).
CONSUMER_NOT_FOUND = 10014
# The headers by which a KV message says its key is gone (a delete, a purge, a server marker).
_KV_OPERATION = "KV-Operation"
_GONE_OPERATIONS = ("DEL", "PURGE")
_MARKER_REASON = "Nats-Marker-Reason"

_log = logging.getLogger(__name__)


def is_gone(msg: Msg) -> bool:
    """Whether a KV message says its key is gone (deleted, purged, removed by the server)."""
    headers = msg.headers or {}
    return headers.get(_KV_OPERATION) in _GONE_OPERATIONS or _MARKER_REASON in headers


def is_transient(err: BaseException) -> bool:
    """Whether `err` from a listing may pass once the cluster settles: no responders, a
    timeout, a 503 or 500 from JetStream, the listing's consumer gone (lost with its node)."""
    if isinstance(
        err,
        TimeoutError  # nats-py's own is one
        | nats_errors.NoRespondersError
        | nats_errors.ConnectionReconnectingError
        | nats_errors.StaleConnectionError
        | js_errors.ServiceUnavailableError
        | js_errors.ServerError,
    ):
        return True
    if isinstance(err, js_errors.NotFoundError):
        # A stream (bucket) not found stays so: only the consumer's loss is tried again.
        return err.err_code == CONSUMER_NOT_FOUND
    if isinstance(err, js_errors.APIError):
        # A status a pull answers with while the consumer's leader moves (nats-py raises it as
        # a bare APIError with the status as its code).
        return err.code == 503
    return False


async def list_kv(
    js: JetStreamContext,
    bucket: str,
    pattern: str,
    *,
    values: bool = True,
    deadline_s: float = LIST_DEADLINE_S,
    retry: BackoffPolicy = RETRY,
) -> dict[str, bytes]:
    """Every live key of `bucket` matching `pattern` with its value (b"" when not `values`):
    the last message of each key, deleted keys left out, in one consumer.

    A transient JetStream error (`is_transient`) starts the listing over with a new consumer
    after the backoff's next wait; it is raised once `deadline_s` has passed (TimeoutError
    when the deadline cut a try short), as is any other error at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    backoff = Backoff(retry)
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                return await _list_once(js, bucket, pattern, values=values)
        except Exception as err:
            if not is_transient(err):
                raise
            delay = backoff.next_delay()
            if loop.time() + delay >= deadline:
                raise
            _log.info(
                "listing %s %s met %s; trying again in %.2fs",
                bucket,
                pattern,
                err or type(err).__name__,
                delay,
            )
            await pause(delay)


async def _list_once(
    js: JetStreamContext, bucket: str, pattern: str, *, values: bool
) -> dict[str, bytes]:
    """One try of `list_kv`: one consumer, deleted at the end."""
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
        # Bounded: after a failed try the cluster may not answer, and the next try waits.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(DELETE_WAIT_S):
                await js.delete_consumer(stream, info.name)
