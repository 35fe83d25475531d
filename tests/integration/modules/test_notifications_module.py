"""The notifications module as a real gRPC server: channels, a failing webhook, the live stream."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel
from services.notifications.module import SPEC
from services.notifications.settings import (
    NotificationsSection,
    NotificationsSettings,
    WebhookTarget,
)
from soulspot.capabilities.v1 import notify_pb2, notify_pb2_grpc
from soulspot.common.v1 import references_pb2
from tests.helpers.module_checks import (
    health_status,
    make_bus,
    reflected_services,
    rpc_error,
    violated_fields,
)
from tests.helpers.webhook_receiver import WebhookReceiverStandin

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SERVICE = "soulspot.capabilities.v1.NotificationService"
TRACK = references_pb2.TrackReference(title="Second Snow", artist="Juniper Hall Quartet")
FILE = references_pb2.FileReference(path="/music/Juniper Hall Quartet/Winter Rooms/02.flac")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiverStandin]:
    standin = WebhookReceiverStandin()
    standin.start()
    yield standin
    standin.stop()


def settings(tmp_path: Path, receiver: WebhookReceiverStandin) -> NotificationsSettings:
    base = receiver.base_url
    return NotificationsSettings(
        state_dir=tmp_path / "state",
        library_root=tmp_path / "library",
        notifications=NotificationsSection(
            webhooks=[
                WebhookTarget(kind="webhook", url=f"{base}/generic"),
                WebhookTarget(kind="discord", url=f"{base}/api/webhooks/1/tok"),
                WebhookTarget(kind="slack", url=f"{base}/services/T/B/X"),
                WebhookTarget(kind="gotify", url=base, token="gtok"),
                WebhookTarget(kind="webhook", url=f"{base}/broken", name="broken"),
            ],
            attempts=2,
            timeout_s=2.0,
        ),
    )


def test_webhooks_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SOULSPOT_NOTIFICATIONS__WEBHOOKS",
        json.dumps([{"kind": "discord", "url": "https://discord.example/api/webhooks/1/x"}]),
    )
    [hook] = NotificationsSettings().notifications.webhooks
    assert (hook.kind, hook.url) == ("discord", "https://discord.example/api/webhooks/1/x")


async def test_every_channel_reports_and_the_stream_sees_it(
    tmp_path: Path, receiver: WebhookReceiverStandin, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.always("/broken", 400)
    caplog.set_level(logging.INFO, logger="soulspot.notifications")
    async with (
        ModuleRuntime(
            SPEC, settings(tmp_path, receiver), port=0, publisher=make_bus(), connect_router=False
        ) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        stub = notify_pb2_grpc.NotificationServiceStub(channel)
        assert await health_status(channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING
        assert SERVICE in await reflected_services(channel)

        early = await stub.NotifyTrackReady(
            notify_pb2.NotifyTrackReadyRequest(track=TRACK, file=FILE), timeout=10
        )
        watch = stub.WatchNotifications(notify_pb2.WatchNotificationsRequest(backlog=5))
        backlog = await asyncio.wait_for(watch.read(), 5)
        assert isinstance(backlog, notify_pb2.WatchNotificationsResponse)
        assert backlog.notification.notification_id == early.notification.notification_id

        reply = await stub.NotifyTrackReady(
            notify_pb2.NotifyTrackReadyRequest(track=TRACK, file=FILE), timeout=10
        )
        live = await asyncio.wait_for(watch.read(), 5)
        assert isinstance(live, notify_pb2.WatchNotificationsResponse)
        assert live.notification.notification_id == reply.notification.notification_id
        watch.cancel()

        outcome = {d.channel: (d.delivered, d.error) for d in reply.deliveries}
        assert outcome["log"] == (True, "")
        assert outcome["stream"] == (True, "")
        for channel_name in ("webhook", "discord", "slack", "gotify"):
            assert outcome[channel_name] == (True, "")
        assert not outcome["webhook:broken"][0]
        assert "400" in outcome["webhook:broken"][1]

    assert receiver.bodies("/api/webhooks/1/tok")[-1]["content"].startswith("**Track ready")
    assert "Second Snow" in receiver.bodies("/services/T/B/X")[-1]["text"]
    assert receiver.requests_to("/message")[-1].query == {"token": ["gtok"]}
    generic = receiver.bodies("/generic")[-1]
    assert generic["track"]["artist"] == "Juniper Hall Quartet"
    logged = [r for r in caplog.records if getattr(r, "channel", "") == "log"]
    assert len(logged) == 2


async def test_a_track_is_required(tmp_path: Path, receiver: WebhookReceiverStandin) -> None:
    async with (
        ModuleRuntime(
            SPEC, settings(tmp_path, receiver), port=0, publisher=make_bus(), connect_router=False
        ) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        stub = notify_pb2_grpc.NotificationServiceStub(channel)
        error = await rpc_error(
            stub.NotifyTrackReady(notify_pb2.NotifyTrackReadyRequest(file=FILE), timeout=5)
        )
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(error) == ["track"]
    assert receiver.requests == []
