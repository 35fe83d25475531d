"""Start what needs JetStream once JetStream answers: retried under the mesh's one backoff.

A router whose NATS is down (or whose JetStream has no quorum yet) when it starts does not
fail: `start_when_reachable` runs a start step (the event store's open, the pipeline run
store's), undoes a half-done one, waits the backoff's next wait and tries again, telling its
caller what it waits for each time, until the step succeeds or `give_up_after_s` has passed.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from services.kit.support.backoff import Backoff, BackoffPolicy, pause

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

_log = logging.getLogger(__name__)

# The first retry soon (a NATS started beside the router is usually up within a second), then
# no more than one try every 5 s: a router waits at most that long after NATS comes up.
START_BACKOFF = BackoffPolicy(initial_s=0.25, multiplier=2.0, cap_s=5.0, jitter="equal")


class JetStreamUnreachable(Exception):
    """JetStream did not answer within the start-up wait (SOULSPOT_BUS__NATS_START_WAIT_S)."""


def waiting_for(servers: Sequence[str]) -> str:
    """What a router waiting for these servers says it waits for."""
    return f"waiting for JetStream at {', '.join(servers)}"


def utc_text(at: float) -> str:
    """A time.time() as its reasons write it: UTC to the second, e.g. 2026-01-01T00:00:00Z."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unreachable_since(servers: Sequence[str], since: float) -> str:
    """What a router that lost these servers after start says (`since`: time.time())."""
    return f"JetStream at {', '.join(servers)} unreachable since {utc_text(since)}"


async def start_when_reachable(
    start: Callable[[], Awaitable[None]],
    undo: Callable[[], Awaitable[None]],
    *,
    servers: Sequence[str],
    give_up_after_s: float,
    on_waiting: Callable[[str], None] | None = None,
    backoff: Backoff | None = None,
) -> None:
    """`await start()` until it succeeds; after each failure `await undo()` (closing what the
    try opened), tell `on_waiting` the reason and wait the backoff's next wait.

    Raises JetStreamUnreachable once `give_up_after_s` (0: never) has passed without success.
    """
    backoff = backoff or Backoff(START_BACKOFF)
    began = time.monotonic()
    while True:
        try:
            await start()
        except Exception as err:
            try:
                await undo()
            except Exception as undo_err:  # the try's own error is the one that matters
                _log.debug("undoing a failed JetStream start: %s", undo_err)
            reason = f"{waiting_for(servers)} ({err or type(err).__name__})"
            waited = time.monotonic() - began
            if give_up_after_s and waited >= give_up_after_s:
                raise JetStreamUnreachable(
                    f"no JetStream at {', '.join(servers)} after {waited:.0f}s "
                    f"(SOULSPOT_BUS__NATS_START_WAIT_S={give_up_after_s:g}): {err}"
                ) from err
            if backoff.failures == 0:
                _log.warning("%s: serving NOT_SERVING until it answers", reason)
            else:
                _log.info("%s", reason)
            if on_waiting is not None:
                on_waiting(reason)
            delay = backoff.next_delay()
            if give_up_after_s:
                delay = min(delay, max(0.0, began + give_up_after_s - time.monotonic()))
            await pause(delay)
        else:
            if backoff.failures:
                _log.info(
                    "JetStream at %s answers after %.1fs",
                    ", ".join(servers),
                    time.monotonic() - began,
                )
            return
