"""The notifications module: what it serves and how it is built."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from services.kit.module.spec import Capability, ModuleParts, ModuleSpec, ServiceBinding
from services.notifications.channels import WebhookSender, redact
from services.notifications.hub import NotificationHub
from services.notifications.notifier import Notifier
from services.notifications.servicer import NotificationServicer
from services.notifications.settings import (
    DEFAULT_PORT,
    NotificationsSection,
    NotificationsSettings,
)
from soulspot.capabilities.v1 import notify_pb2, notify_pb2_grpc

if TYPE_CHECKING:
    from services.kit.module.runtime import ModuleRuntime

__all__ = ["SPEC", "build"]


def build(runtime: ModuleRuntime[NotificationsSection]) -> ModuleParts:
    section = runtime.section
    client = httpx.AsyncClient(
        timeout=section.timeout_s, headers={"User-Agent": "SoulSpot-notifications/0.1"}
    )
    hub = NotificationHub(section.backlog_size)
    notifier = Notifier(
        hub,
        WebhookSender(client, attempts=section.attempts),
        list(section.webhooks),
        log_enabled=section.log,
    )

    async def start() -> None:
        channels = ["log"] if section.log else []
        channels += ["stream"] + [f"{w.kind} {redact(w.url)}" for w in section.webhooks]
        await runtime.set_health(True, "channels: " + ", ".join(channels))

    async def stop() -> None:
        hub.close()
        await client.aclose()

    return ModuleParts(
        services=[
            ServiceBinding.of(
                notify_pb2.DESCRIPTOR.services_by_name["NotificationService"],
                NotificationServicer(notifier),
                notify_pb2_grpc.add_NotificationServiceServicer_to_server,
            )
        ],
        start=start,
        stop=stop,
    )


SPEC = ModuleSpec(
    name="notifications",
    default_port=DEFAULT_PORT,
    capabilities=[Capability("notify.track_ready", 10), Capability("notify.watch", 10)],
    factory=build,
    section_cls=NotificationsSection,
    settings_cls=NotificationsSettings,
)
