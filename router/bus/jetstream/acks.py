"""Publishes to JetStream (and requests) answered on one shared inbox, no task per message.

nats-py's `JetStreamContext.publish` makes a request per message (its own timeout task and
futures): about half of the store's CPU per event. Here every publish replies to
`<inbox>.<token>` under one subscription; the ack resolves a future, and one timer per
publish (a cheap handle, not a task) fails it if no ack comes in time.

Headers go as a header block built by the caller (`header_block`), once per message:
nats-py's `publish(headers=...)` checks, cleans and encodes every header of every message,
5-8% of the bus's CPU in its throughput scenario. `publish_encoded` is nats-py's
`Client._send_publish` (nats-py 2.16) after that encoding, with `publish`'s checks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import TYPE_CHECKING, Any

from nats import errors as nats_errors
from nats.protocol.command import hpub_cmd

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription


class PublishError(Exception):
    """JetStream refused a publish, or did not answer in time."""


# What nats-py does to a header value: no line breaks (they would end the header).
_VALUE_NEWLINES = str.maketrans({"\r": " ", "\n": " "})


def header_value(value: str) -> str:
    """A header value as nats-py would send it (stripped, line breaks as spaces)."""
    value = value.strip()
    # A translate is a copy; ids almost never hold a line break.
    if "\r" in value or "\n" in value:
        return value.translate(_VALUE_NEWLINES)
    return value


def header_block(headers: dict[str, str]) -> bytes:
    """The NATS header block of `headers`, whose keys are this code's own header names and
    whose values went through `header_value` (or are this code's own)."""
    lines = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    return f"NATS/1.0\r\n{lines}\r\n".encode()


async def publish_encoded(
    nc: Client, subject: str, data: bytes, header: bytes, reply: str = ""
) -> None:
    """`nc.publish(subject, data, reply=reply, headers=...)` with the header block already
    built: the same checks and errors, the same buffering and flushing."""
    if nc.is_closed:
        raise nats_errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise nats_errors.ConnectionDrainingError
    size = len(data)
    if not nc.is_connected and (
        nc._max_pending_size <= 0 or size + nc._pending_data_size > nc._max_pending_size
    ):
        raise nats_errors.OutboundBufferLimitError
    if size > nc._max_payload:
        raise nats_errors.MaxPayloadError
    if not subject:
        raise nats_errors.BadSubjectError
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += size
    await nc._send_command(hpub_cmd(subject, reply, header, data))
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


async def publish_many_encoded(nc: Client, messages: Sequence[tuple[str, bytes, bytes]]) -> None:
    """`publish_encoded` of each (subject, data, header) in order, as one command: the
    checks first (none is sent if one is refused), then one write to nats-py's buffer and
    one flush, not one per message (the store sends a group's events and ids this way)."""
    if not messages:
        return
    if nc.is_closed:
        raise nats_errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise nats_errors.ConnectionDrainingError
    size = sum(len(data) for _, data, _ in messages)
    if not nc.is_connected and (
        nc._max_pending_size <= 0 or size + nc._pending_data_size > nc._max_pending_size
    ):
        raise nats_errors.OutboundBufferLimitError
    max_payload = nc._max_payload
    for subject, data, _ in messages:
        if len(data) > max_payload:
            raise nats_errors.MaxPayloadError
        if not subject:
            raise nats_errors.BadSubjectError
    nc.stats["out_msgs"] += len(messages)
    nc.stats["out_bytes"] += size
    await nc._send_command(b"".join(hpub_cmd(s, "", h, d) for s, d, h in messages))
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


class AckedPublisher:
    """Sends messages to streams and hands back a future of each one's (sequence, duplicate)."""

    def __init__(self, nc: Client, *, wait_s: float) -> None:
        self._nc = nc
        self._wait_s = wait_s
        self._prefix = ""
        self._tokens = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[tuple[int, bool]]] = {}
        self._replies: dict[str, asyncio.Future[Msg]] = {}
        # Requests answered by several messages (a batch direct get), until a status ends them.
        self._batches: dict[str, tuple[asyncio.Future[list[Msg]], list[Msg]]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox() + "."
        self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        pending: list[asyncio.Future[Any]] = [
            *self._waiting.values(),
            *self._replies.values(),
            *(future for future, _ in self._batches.values()),
        ]
        for future in pending:
            if not future.done():
                future.set_exception(PublishError("the store closed before JetStream answered"))
        self._waiting.clear()
        self._replies.clear()
        self._batches.clear()

    async def request_batch(self, subject: str, data: bytes) -> asyncio.Future[list[Msg]]:
        """Send a request answered by a run of messages ended by a status message (a batch
        direct get); the future settles with the run and its closing status last."""
        loop = asyncio.get_running_loop()
        token = "b" + str(next(self._tokens))
        future: asyncio.Future[list[Msg]] = loop.create_future()
        self._batches[token] = (future, [])
        timer = loop.call_later(self._wait_s, self._expire, token)
        future.add_done_callback(lambda _f: timer.cancel())
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token)
        except BaseException:
            self._forget(token)
            raise
        return future

    async def request(self, subject: str, data: bytes) -> asyncio.Future[Msg]:
        """Send a request now (in call order with publishes); the future settles with the
        reply as it came."""
        loop = asyncio.get_running_loop()
        token = "r" + str(next(self._tokens))
        future: asyncio.Future[Msg] = loop.create_future()
        self._replies[token] = future
        timer = loop.call_later(self._wait_s, self._expire, token)
        future.add_done_callback(lambda _f: timer.cancel())
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token)
        except BaseException:
            self._forget(token)
            raise
        return future

    async def send(
        self, subject: str, data: bytes, header: bytes
    ) -> asyncio.Future[tuple[int, bool]]:
        """Send now (in call order) with the header block `header` (`header_block`); the
        future settles with the ack."""
        loop = asyncio.get_running_loop()
        token = str(next(self._tokens))
        future: asyncio.Future[tuple[int, bool]] = loop.create_future()
        self._waiting[token] = future
        timer = loop.call_later(self._wait_s, self._expire, token)
        future.add_done_callback(lambda _f: timer.cancel())
        try:
            await publish_encoded(self._nc, subject, data, header, self._prefix + token)
        except BaseException:
            self._forget(token)
            raise
        return future

    def _forget(self, token: str) -> None:
        """A request that never left (the client refused it): nothing waits for its answer."""
        batch = self._batches.pop(token, None)
        for future in (
            self._waiting.pop(token, None),
            self._replies.pop(token, None),
            batch[0] if batch is not None else None,
        ):
            if future is not None:
                future.cancel()

    def _expire(self, token: str) -> None:
        batch = self._batches.pop(token, None)
        future: asyncio.Future[Any] | None = (
            self._waiting.pop(token, None)
            or self._replies.pop(token, None)
            or (batch[0] if batch is not None else None)
        )
        if future is not None and not future.done():
            future.set_exception(PublishError(f"no ack from JetStream within {self._wait_s}s"))

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject.rsplit(".", 1)[-1]
        batch = self._batches.get(token)
        if batch is not None:
            batch[1].append(msg)
            if msg.headers and msg.headers.get("Status"):
                del self._batches[token]
                if not batch[0].done():
                    batch[0].set_result(batch[1])
            return
        reply = self._replies.pop(token, None)
        if reply is not None:
            if not reply.done():
                reply.set_result(msg)
            return
        future = self._waiting.pop(token, None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(PublishError("no JetStream stream answered (503)"))
            return
        try:
            ack: dict[str, Any] = json.loads(msg.data)
        except ValueError:
            future.set_exception(PublishError(f"unreadable ack: {msg.data[:200]!r}"))
            return
        error = ack.get("error")
        if error:
            future.set_exception(PublishError(f"JetStream refused the publish: {error}"))
            return
        future.set_result((int(ack["seq"]), bool(ack.get("duplicate", False))))
