"""Composing a notification and sending it on every channel."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from services.notifications.channels import Delivery, log_notification
from soulspot.capabilities.v1 import notify_pb2

if TYPE_CHECKING:
    from services.notifications.channels import WebhookSender
    from services.notifications.hub import NotificationHub
    from services.notifications.settings import WebhookTarget
    from soulspot.common.v1 import references_pb2

__all__ = ["Notifier", "compose"]


def compose(
    track: references_pb2.TrackReference, file: references_pb2.FileReference
) -> notify_pb2.Notification:
    who = track.artist or "Unknown artist"
    what = track.title or "Unknown title"
    body = f"{who} \u2013 {what}"
    if track.album:
        body += f" ({track.album})"
    body += " is ready in the library"
    if file.path:
        body += f": {file.path}"
    sent_at = timestamp_pb2.Timestamp()
    sent_at.GetCurrentTime()
    return notify_pb2.Notification(
        notification_id=uuid.uuid4().hex,
        title=f"Track ready: {who} \u2013 {what}",
        body=body,
        track=track,
        file=file,
        sent_at=sent_at,
    )


class Notifier:
    def __init__(
        self,
        hub: NotificationHub,
        sender: WebhookSender,
        webhooks: list[WebhookTarget],
        *,
        log_enabled: bool = True,
    ) -> None:
        self.hub = hub
        self._sender = sender
        self._webhooks = webhooks
        self._log_enabled = log_enabled

    async def notify(
        self, track: references_pb2.TrackReference, file: references_pb2.FileReference
    ) -> tuple[notify_pb2.Notification, list[Delivery]]:
        notification = compose(track, file)
        deliveries: list[Delivery] = []
        if self._log_enabled:
            deliveries.append(log_notification(notification))
        self.hub.publish(notification)
        deliveries.append(Delivery("stream", True))
        # Webhooks in parallel: one slow receiver must not delay the others.
        deliveries.extend(
            await asyncio.gather(*(self._sender.send(t, notification) for t in self._webhooks))
        )
        return notification, deliveries
