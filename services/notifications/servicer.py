"""The NotificationService gRPC servicer: notify.track_ready and the live stream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from soulspot.capabilities.v1 import notify_pb2, notify_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import grpc

    from services.notifications.notifier import Notifier


class NotificationServicer(notify_pb2_grpc.NotificationServiceServicer):
    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    async def NotifyTrackReady(
        self,
        request: notify_pb2.NotifyTrackReadyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> notify_pb2.NotifyTrackReadyResponse:
        notification, deliveries = await self._notifier.notify(request.track, request.file)
        return notify_pb2.NotifyTrackReadyResponse(
            notification=notification,
            deliveries=[
                notify_pb2.ChannelDelivery(channel=d.channel, delivered=d.delivered, error=d.error)
                for d in deliveries
            ],
        )

    async def WatchNotifications(
        self,
        request: notify_pb2.WatchNotificationsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[notify_pb2.WatchNotificationsResponse]:
        async for notification in self._notifier.hub.watch(request.backlog):
            yield notify_pb2.WatchNotificationsResponse(notification=notification)
