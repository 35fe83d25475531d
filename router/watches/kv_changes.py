"""Follow the watches of a shared KV bucket and wake this router's scheduler when another
router's change may make a watch due sooner than it had planned.

A scheduler sleeps until the soonest watch it listed is due. A watch added through another
router, its interval shortened there, or a claim let go there (a run cut short) can make a watch
due earlier than that; without a word the scheduler would see it only at its next wake-up (up
to its longest sleep). One feed per store follows the bucket's `watches.*` keys through a pull
consumer (the last value of each key, then every change) and calls `wake` when a key is new or
its due time moved earlier; a later due time (a claim, its renewal, a finished run, this
router's own writes mostly) needs no wake-up, so none is made.

The consumer is the feed's own, deleted when it stops. When it fails (NATS away, the server
restarted and its in-memory consumer went with it: an idle pull asks for the consumer's info
and finds it gone) the feed starts over under the kit's one backoff, with a fresh consumer
from the last value of each key, and wakes once, as whatever changed meanwhile was not seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from router.bus.jetstream.kv_listing import BATCH, is_gone
from services.kit.support.backoff import Backoff, BackoffPolicy
from services.kit.support.tasks import cancel_within

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

_log = logging.getLogger("router.watches.kv")

# How long one pull waits for a change before the feed checks its consumer is still there.
POLL_S = 5.0
# A consumer whose feed went without deleting it (the connection dropped) is removed by the
# server after this long without a pull (a live feed pulls every POLL_S).
INACTIVE_S = 60.0
# How long stopping waits for the consumer's deletion.
DELETE_WAIT_S = 1.0
# How long stopping waits for the feed's loop to end (cancelled again meanwhile: a pull may
# lose a cancellation, see cancel_within).
STOP_WAIT_S = 5.0
# Waits between tries to follow the bucket again after a failure.
RETRY = BackoffPolicy(initial_s=0.5, multiplier=2.0, cap_s=10.0, jitter="equal")


class WatchChangeFeed:
    """Calls `wake` when a watch in the bucket is new or due sooner than the feed last saw;
    `due_of` reads a watch's due time from its stored value."""

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        pattern: str,
        *,
        due_of: Callable[[bytes], float],
        wake: Callable[[], None],
        poll_s: float = POLL_S,
        retry: BackoffPolicy = RETRY,
    ) -> None:
        self._js = js
        self._stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."
        self._pattern = pattern
        self._due_of = due_of
        self._wake = wake
        self._poll_s = poll_s
        self._retry = retry
        self._task: asyncio.Task[None] | None = None
        # The consumer followed and not deleted yet: stopping deletes it when the loop, cut
        # short, could not.
        self._consumer: str | None = None
        # Consumers the feed has followed, counted: a test sees a restart here.
        self.consumers_made = 0

    def start(self) -> None:
        """Follow the bucket until `stop`; a second start is a no-op (one feed per store)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"watch-changes-{self._stream}"
            )

    async def stop(self) -> None:
        """End the loop within STOP_WAIT_S and delete its consumer (within DELETE_WAIT_S)."""
        task, self._task = self._task, None
        if task is None:
            return
        if not await cancel_within(task, STOP_WAIT_S):
            _log.warning("the feed of watch changes did not end within %gs", STOP_WAIT_S)
        await self._delete_consumer()

    async def _delete_consumer(self) -> None:
        """Delete the consumer followed, if any; bounded: with NATS away the server drops it
        itself (INACTIVE_S)."""
        name = self._consumer
        if name is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(DELETE_WAIT_S):
                await self._js.delete_consumer(self._stream, name)
            if self._consumer == name:
                self._consumer = None

    async def _run(self) -> None:
        backoff = Backoff(self._retry)
        while True:
            try:
                await self._follow(backoff)
            except Exception as err:  # NATS away, the consumer lost: follow again
                _log.warning("lost the feed of watch changes (%s); following again", err)
            await backoff.wait()

    async def _follow(self, backoff: Backoff) -> None:
        info = await self._js.add_consumer(
            self._stream,
            ConsumerConfig(
                filter_subject=self._prefix + self._pattern,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=AckPolicy.NONE,
                mem_storage=True,
                num_replicas=1,
                inactive_threshold=INACTIVE_S,
            ),
        )
        self.consumers_made += 1
        self._consumer = info.name
        due: dict[str, float] = {}
        try:
            sub = await self._js.pull_subscribe_bind(consumer=info.name, stream=self._stream)
            try:
                while True:
                    try:
                        msgs = await sub.fetch(BATCH, timeout=self._poll_s)
                    except TimeoutError:  # nats-py's own is one
                        # Quiet, or the consumer is gone: this raises in the second case.
                        await sub.consumer_info()
                        backoff.reset()
                        continue
                    backoff.reset()
                    self._note(due, msgs)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        finally:
            await self._delete_consumer()

    def _note(self, due: dict[str, float], msgs: list[Msg]) -> None:
        """Note each message's watch; wake for each one new or due sooner than before."""
        for msg in msgs:
            key = msg.subject.removeprefix(self._prefix)
            if is_gone(msg):
                due.pop(key, None)
                continue
            try:
                when = self._due_of(msg.data)
            except (ValueError, TypeError, KeyError) as err:
                _log.warning("unreadable playlist watch %s in the bucket: %s", key, err)
                continue
            before = due.get(key)
            due[key] = when
            if before is None or when < before:
                self._wake()
