"""Where a notification goes: the log, webhooks (generic, Discord, Slack, Gotify).

Every channel reports its own outcome; a channel that fails never fails the others or the
call. Webhook URLs often carry secrets (Discord and Slack put the token in the path), so
reports and logs name only the scheme and host.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from google.protobuf.json_format import MessageToDict

from services.kit.support.backoff import Backoff, BackoffPolicy

if TYPE_CHECKING:
    from services.notifications.settings import WebhookTarget
    from soulspot.capabilities.v1 import notify_pb2

__all__ = ["Delivery", "WebhookSender", "log_notification", "payload_for", "redact"]

log = logging.getLogger("soulspot.notifications")

DISCORD_MAX = 2000  # Discord refuses longer `content`
SLACK_MAX = 3000


@dataclass(frozen=True)
class Delivery:
    channel: str
    delivered: bool
    error: str = ""


class _Retryable(Exception):
    """A webhook answer worth another attempt (429, 5xx) or a transport failure."""


def redact(url: str) -> str:
    """The URL without its path and query, which may hold a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "<invalid url>"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def generic_payload(notification: notify_pb2.Notification) -> dict[str, Any]:
    return {
        "event": "track.ready",
        **MessageToDict(notification, preserving_proto_field_name=True),
    }


def payload_for(kind: str, notification: notify_pb2.Notification, priority: int = 5) -> Any:
    if kind == "discord":
        return {"content": _clip(f"**{notification.title}**\n{notification.body}", DISCORD_MAX)}
    if kind == "slack":
        return {"text": _clip(f"*{notification.title}*\n{notification.body}", SLACK_MAX)}
    if kind == "gotify":
        return {"title": notification.title, "message": notification.body, "priority": priority}
    return generic_payload(notification)


def log_notification(notification: notify_pb2.Notification) -> Delivery:
    """One JSON line in the log (the JSON formatter turns `extra` into fields)."""
    log.info(
        notification.title,
        extra={
            "notification": MessageToDict(notification, preserving_proto_field_name=True),
            "channel": "log",
        },
    )
    return Delivery("log", True)


def _gotify_request(target: WebhookTarget) -> tuple[str, dict[str, str]]:
    url = target.url.rstrip("/")
    if not urlsplit(url).path.endswith("/message"):
        url += "/message"
    return url, ({"token": target.token} if target.token else {})


class WebhookSender:
    """Posts notifications to webhooks: up to `attempts` tries per target, the waits between
    them from the kit's backoff (starting near `first_wait_s`, at most `max_wait_s`)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        attempts: int = 3,
        first_wait_s: float = 0.1,
        max_wait_s: float = 2.0,
    ) -> None:
        self._client = client
        self._attempts = max(1, attempts)
        # Equal jitter: receivers behind one rate limit (a Discord server) get their retries
        # spread out, and no wait is so short that a struggling receiver is hammered.
        self.backoff = BackoffPolicy(
            initial_s=min(first_wait_s, max_wait_s), cap_s=max_wait_s, jitter="equal"
        )

    async def send(self, target: WebhookTarget, notification: notify_pb2.Notification) -> Delivery:
        channel = f"{target.kind}:{target.name}" if target.name else target.kind
        url, params = target.url, dict[str, str]()
        if target.kind == "gotify":
            url, params = _gotify_request(target)
        body = payload_for(target.kind, notification, target.priority)
        try:
            await self._post_with_retries(url, params, body)
        except (_Retryable, httpx.HTTPError, ValueError) as err:
            message = f"{redact(target.url)}: {err}"
            log.warning(
                "notification not delivered",
                extra={"channel": channel, "error": message, "impact": "user not told"},
            )
            return Delivery(channel, False, message)
        return Delivery(channel, True)

    async def _post_with_retries(self, url: str, params: dict[str, str], body: Any) -> None:
        """Post until the receiver accepts, refuses, or the attempts run out (the last
        failure raised)."""
        backoff = Backoff(self.backoff)
        for attempt in range(1, self._attempts + 1):
            try:
                await self._post(url, params, body)
                return
            except _Retryable:
                if attempt == self._attempts:
                    raise
            await backoff.wait()

    async def _post(self, url: str, params: dict[str, str], body: Any) -> None:
        try:
            response = await self._client.post(url, params=params, json=body)
        except httpx.TransportError as err:
            raise _Retryable(f"unreachable ({type(err).__name__})") from err
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"answered HTTP {response.status_code}")
        if response.status_code >= 400:
            # The receiver refused this payload (bad token, bad URL): another try would too.
            raise ValueError(f"answered HTTP {response.status_code}: {response.text[:200]}")
