"""Reads of a JetStream stream by direct get: one message, or a batch in one request.

A batch direct get (`{"seq": n, "batch": m}` on `$JS.API.DIRECT.GET.<stream>`) answers up to
m messages from sequence n on, then an end-of-batch status: one round trip per page, which
the store's catch-up reads and scans use. The stream needs `allow_direct`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nats.aio.client import Client
    from nats.aio.msg import Msg

# Status of the message that ends a batch (204) or answers "nothing there" (404).
_END_STATUSES = frozenset({"204", "404", "408"})


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of a stream as a direct get returns it."""

    sequence: int
    subject: str
    headers: dict[str, str]
    data: bytes


def _stored(stream: str, msg: Msg) -> StoredMessage | None:
    """One reply of a direct get: its message, or None for the status that ends the answer
    (an error raises)."""
    headers = {str(k): str(v) for k, v in (msg.headers or {}).items()}
    status = headers.get("Status")
    if status is not None:
        if status in _END_STATUSES:
            return None
        raise RuntimeError(f"direct get on {stream} failed: {status} {msg.data!r}")
    return StoredMessage(int(headers["Nats-Sequence"]), headers["Nats-Subject"], headers, msg.data)


def stored_messages(stream: str, replies: Sequence[Msg]) -> list[StoredMessage]:
    """The messages of a direct get's answer, up to its closing status (an error raises)."""
    out: list[StoredMessage] = []
    for msg in replies:
        stored = _stored(stream, msg)
        if stored is None:
            break
        out.append(stored)
    return out


async def get_batch(
    nc: Client,
    stream: str,
    request: dict[str, Any],
    *,
    wait_s: float,
) -> list[StoredMessage]:
    """The messages a direct get request answers (`seq`, `batch`, `start_time`,
    `next_by_subj`, ...), in stream order; [] when there are none."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    out: list[StoredMessage] = []
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=inbox)
        while True:
            stored = _stored(stream, await sub.next_msg(wait_s))
            if stored is None:
                return out
            out.append(stored)
            if "batch" not in request:
                return out
    finally:
        await sub.unsubscribe()


def rfc3339(time_us: int) -> str:
    """A wall-clock time in microseconds as JetStream's start_time wants it."""
    moment = datetime.fromtimestamp(time_us / 1_000_000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
