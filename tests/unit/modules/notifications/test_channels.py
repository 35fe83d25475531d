"""Webhook payloads per service, retries, and failures reported instead of raised."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from services.kit.support import backoff
from services.notifications.channels import WebhookSender, payload_for, redact
from services.notifications.notifier import compose
from services.notifications.settings import WebhookTarget
from soulspot.common.v1 import references_pb2
from tests.helpers.recorded_waits import RecordedWaits
from tests.helpers.webhook_receiver import WebhookReceiverStandin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

TRACK = references_pb2.TrackReference(
    title="Atlas Error", artist="Velvet Cartography", album="Maps"
)
FILE = references_pb2.FileReference(path="/music/Velvet Cartography/Maps/03 - Atlas Error.flac")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiverStandin]:
    standin = WebhookReceiverStandin()
    standin.start()
    yield standin
    standin.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=2.0) as http:
        yield http


def test_payload_shapes() -> None:
    note = compose(TRACK, FILE)
    assert note.title == "Track ready: Velvet Cartography \u2013 Atlas Error"
    assert FILE.path in note.body
    assert payload_for("discord", note) == {"content": f"**{note.title}**\n{note.body}"}
    assert payload_for("slack", note) == {"text": f"*{note.title}*\n{note.body}"}
    assert payload_for("gotify", note, 8) == {
        "title": note.title,
        "message": note.body,
        "priority": 8,
    }
    generic = payload_for("webhook", note)
    assert generic["event"] == "track.ready"
    assert generic["track"]["title"] == "Atlas Error"
    assert generic["file"]["path"] == FILE.path


def test_discord_content_is_clipped_to_its_limit() -> None:
    note = compose(references_pb2.TrackReference(title="x" * 3000, artist="y"), FILE)
    assert len(payload_for("discord", note)["content"]) == 2000


def test_redact_hides_tokens_in_urls() -> None:
    assert redact("https://discord.com/api/webhooks/123/SECRET?wait=true") == "https://discord.com"


async def test_gotify_gets_token_and_message_path(
    receiver: WebhookReceiverStandin, client: httpx.AsyncClient
) -> None:
    target = WebhookTarget(kind="gotify", url=receiver.base_url, token="tok123", priority=7)
    delivery = await WebhookSender(client).send(target, compose(TRACK, FILE))
    assert delivery.delivered
    [request] = receiver.requests_to("/message", "POST")
    assert request.query == {"token": ["tok123"]}
    assert receiver.bodies("/message")[0]["priority"] == 7


async def test_server_errors_are_retried_then_delivered(
    receiver: WebhookReceiverStandin, client: httpx.AsyncClient
) -> None:
    receiver.fail_next("/hook", 503, 429)
    target = WebhookTarget(kind="webhook", url=f"{receiver.base_url}/hook")
    delivery = await WebhookSender(client, attempts=3, max_wait_s=0.05).send(
        target, compose(TRACK, FILE)
    )
    assert delivery.delivered
    assert len(receiver.requests_to("/hook")) == 3


async def test_a_refusal_is_reported_not_retried(
    receiver: WebhookReceiverStandin, client: httpx.AsyncClient
) -> None:
    receiver.always("/slack", 403)
    target = WebhookTarget(kind="slack", url=f"{receiver.base_url}/slack/T000/SECRET")
    receiver.always("/slack/T000/SECRET", 403)
    delivery = await WebhookSender(client, attempts=3, max_wait_s=0.05).send(
        target, compose(TRACK, FILE)
    )
    assert not delivery.delivered
    assert "403" in delivery.error
    assert "SECRET" not in delivery.error
    assert len(receiver.requests_to("/slack")) == 1


async def test_an_unreachable_receiver_is_reported(client: httpx.AsyncClient) -> None:
    target = WebhookTarget(kind="discord", url="http://127.0.0.1:9/api/webhooks/1/x", name="ops")
    delivery = await WebhookSender(client, attempts=2, max_wait_s=0.05).send(
        target, compose(TRACK, FILE)
    )
    assert delivery.channel == "discord:ops"
    assert not delivery.delivered
    assert "unreachable" in delivery.error


async def test_retry_waits_grow_jittered_and_stop_at_the_attempt_limit(
    receiver: WebhookReceiverStandin,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = RecordedWaits.install(monkeypatch, wanted=100)
    draws = iter([0.2, 0.6, 0.4])
    monkeypatch.setattr(backoff, "random_fraction", lambda: next(draws))
    receiver.always("/hook", 503)
    sender = WebhookSender(client, attempts=4, first_wait_s=0.1, max_wait_s=2.0)
    delivery = await sender.send(
        WebhookTarget(kind="webhook", url=f"{receiver.base_url}/hook"), compose(TRACK, FILE)
    )
    assert not delivery.delivered
    assert "503" in delivery.error
    assert len(receiver.requests_to("/hook")) == 4  # the limit, then no more
    # Equal jitter: half the step plus the drawn share of the other half.
    tops = [sender.backoff.ceiling(n) for n in range(3)]
    expected = [top / 2 + f * top / 2 for top, f in zip(tops, [0.2, 0.6, 0.4], strict=True)]
    assert recorded.waits == pytest.approx(expected)
    assert recorded.waits[0] < recorded.waits[1] < recorded.waits[2]
