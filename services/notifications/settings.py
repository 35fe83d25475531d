"""The notifications module's settings: `SOULSPOT_NOTIFICATIONS__*` or `notifications:` in the
config file.

Webhooks are a list, in the environment as JSON:

    SOULSPOT_NOTIFICATIONS__WEBHOOKS='[
        {"kind": "discord", "url": "https://discord.com/api/webhooks/..."},
        {"kind": "gotify", "url": "https://gotify.example", "token": "..."}]'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.kit.module.spec import ModuleSection
from services.kit.support.settings import KitSettings

WebhookKind = Literal["webhook", "discord", "slack", "gotify"]


DEFAULT_PORT = 50067


class WebhookTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # "webhook" posts the generic JSON notification; the others their service's payload.
    kind: WebhookKind = "webhook"
    url: str
    # Gotify's application token; may instead be in the URL as ?token=.
    token: str = ""
    # Gotify message priority.
    priority: int = 5
    # A name for logs and delivery reports; defaults to the kind.
    name: str = ""


class NotificationsSection(ModuleSection):
    # SOULSPOT_NOTIFICATIONS__WEBHOOKS: the webhook channels (JSON list of {kind, url}).
    webhooks: list[WebhookTarget] = Field(default_factory=list)
    # SOULSPOT_NOTIFICATIONS__LOG: also write each notification to the log as one JSON line.
    log: bool = True
    # Seconds one webhook request may take.
    timeout_s: float = 5.0
    # Attempts per webhook (transport errors, 429 and 5xx are retried).
    attempts: int = Field(default=3, ge=1, le=10)
    # How many recent notifications the live stream keeps for late watchers.
    backlog_size: int = Field(default=100, ge=1, le=10_000)


class NotificationsSettings(KitSettings):
    notifications: NotificationsSection = NotificationsSection()
