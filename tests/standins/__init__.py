"""Local HTTP stand-ins for the external services the adapters talk to.

Spotify, slskd and MusicBrainz cannot be reached from the test environment, so each adapter is
tested against a small server here that speaks the documented subset of the real API. This
module holds the shared plumbing: a stdlib ``ThreadingHTTPServer`` on 127.0.0.1, port 0, in a
daemon thread, dispatching every request to :meth:`StandinServer.handle` and logging it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["LoggedRequest", "Reply", "StandinServer", "json_reply"]


@dataclass(frozen=True)
class LoggedRequest:
    at: float  # time.monotonic() on arrival
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status,
        json.dumps(payload).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )


class StandinServer:
    """Base class: subclasses implement :meth:`handle`."""

    def __init__(self) -> None:
        self.requests: list[LoggedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self._log_lock = threading.Lock()

    def handle(self, request: LoggedRequest) -> Reply:
        raise NotImplementedError

    def start(self) -> str:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _dispatch(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                request = LoggedRequest(
                    at=time.monotonic(),
                    method=self.command,
                    path=split.path,
                    query=parse_qs(split.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with standin._log_lock:
                    standin.requests.append(request)
                try:
                    reply = standin.handle(request)
                except Exception as exc:  # a stand-in bug must surface as a 500, not a hang
                    reply = json_reply(500, {"error": repr(exc)})
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if reply.body:
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = _dispatch

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        # A short poll interval keeps stop() (and so every test teardown) fast.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[LoggedRequest]:
        with self._log_lock:
            return [
                r
                for r in self.requests
                if r.path.startswith(path_prefix) and (method is None or r.method == method)
            ]
