"""A stand-in for webhook receivers (a Discord/Slack/Gotify server, a generic endpoint): a local
HTTP server that records every request and answers what the test tells it to."""

from __future__ import annotations

import json
import threading
from typing import Any

from tests.standins import LoggedRequest, Reply, StandinServer, json_reply

__all__ = ["WebhookReceiverStandin"]


class WebhookReceiverStandin(StandinServer):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._scripted: dict[str, list[int]] = {}
        self._always: dict[str, int] = {}

    def fail_next(self, path: str, *statuses: int) -> None:
        """The next requests to `path` get these statuses, in order."""
        with self._lock:
            self._scripted.setdefault(path, []).extend(statuses)

    def always(self, path: str, status: int) -> None:
        with self._lock:
            self._always[path] = status

    def handle(self, request: LoggedRequest) -> Reply:
        with self._lock:
            scripted = self._scripted.get(request.path)
            if scripted:
                return json_reply(scripted.pop(0), {"error": "scripted failure"})
            if request.path in self._always:
                return json_reply(self._always[request.path], {"error": "refused"})
        return json_reply(200, {"ok": True})

    def bodies(self, path: str) -> list[Any]:
        return [json.loads(r.body) for r in self.requests_to(path, "POST")]
