"""Stand-in for slskd, speaking the documented subset of its REST API (``/api/v0``).

Not slskd: a local test server that behaves like it where the adapter depends on it.

* ``X-API-Key`` is required (401 otherwise).
* ``POST /searches`` and ``POST /transfers/downloads/{username}`` admit one request at a time:
  an overlapping one gets 429, as slskd's request limiters do.
* A search completes after ``search_polls`` polls of ``GET /searches/{id}``; responses come
  from ``GET /searches/{id}/responses`` (peer catalogue matched on every query word).
* Downloads move Queued, Remotely -> InProgress -> the file's configured final state after its
  configured number of polls (or stay queued forever), and on success the file (generated with
  ``services.kit.testing.sample_audio``) is written to ``<downloads>/<remote folder>/<name>``.
* ``GET /application`` reports the server connection (``logged_in`` knob).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.kit.testing.sample_audio import write_flac, write_mp3
from tests.standins import LoggedRequest, Reply, StandinServer, json_reply

__all__ = ["ERRORED", "QUEUED", "SUCCEEDED", "Peer", "PeerFile", "SlskdStandin"]

SUCCEEDED = "Completed, Succeeded"
ERRORED = "Completed, Errored"
QUEUED = "Queued, Remotely"


@dataclass
class PeerFile:
    """A file a peer shares, and what happens when it is downloaded."""

    filename: str  # remote path, e.g. "@@alice\\Music\\Artist\\Album\\01 - Song.flac"
    seconds: float = 1.0
    bit_rate: int | None = None
    bit_depth: int | None = None
    sample_rate: int | None = 44100
    length: int | None = None
    is_locked: bool = False
    final_state: str = SUCCEEDED
    polls_to_finish: int | None = 1  # None: stays "Queued, Remotely" forever
    write_file: bool | None = None  # default: only when final_state is SUCCEEDED
    content: bytes = b""
    size: int = 0

    @property
    def parts(self) -> list[str]:
        return [p for p in re.split(r"[\\/]+", self.filename) if p]


@dataclass
class Peer:
    username: str
    files: list[PeerFile]
    has_free_upload_slot: bool = True
    queue_length: int = 0
    upload_speed: int = 1_000_000


@dataclass
class _Transfer:
    id: str
    username: str
    file: PeerFile
    state: str = QUEUED
    polls: int = 0
    requested_at: float = field(default_factory=time.time)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class SlskdStandin(StandinServer):
    def __init__(
        self,
        *,
        api_key: str,
        downloads_dir: str | Path,
        peers: list[Peer] | None = None,
        search_polls: int = 1,
        post_hold_s: float = 0.05,
        logged_in: bool = True,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.downloads_dir = Path(downloads_dir)
        self.peers: dict[str, Peer] = {}
        self.search_polls = search_polls
        self.post_hold_s = post_hold_s
        self.logged_in = logged_in
        self.searches: dict[str, dict[str, Any]] = {}
        self.transfers: dict[str, _Transfer] = {}
        self.too_many_requests = 0
        self._lock = threading.Lock()
        self._search_busy = threading.Lock()
        self._enqueue_busy = threading.Lock()
        self._cache = Path(tempfile.mkdtemp(prefix="slskd-standin-"))
        for peer in peers or []:
            self.add_peer(peer)

    # -- catalogue -------------------------------------------------------------------------------

    def add_peer(self, peer: Peer) -> None:
        for file in peer.files:
            if not file.content:
                file.content = self._generate(file)
            file.size = len(file.content)
            if file.length is None:
                file.length = round(file.seconds)
        self.peers[peer.username] = peer

    def _generate(self, file: PeerFile) -> bytes:
        parts = file.parts
        name = parts[-1]
        stem, _, ext = name.rpartition(".")
        title = stem.split(" - ", 1)[-1]
        tags = {
            "title": title,
            "album": parts[-2] if len(parts) > 1 else "",
            "artist": parts[-3] if len(parts) > 2 else "",
        }
        target = self._cache / f"{uuid.uuid4().hex}.{ext.lower()}"
        if ext.lower() == "flac":
            write_flac(target, seconds=file.seconds, tone_hz=330.0, tags=tags)
        elif ext.lower() == "mp3":
            write_mp3(target, seconds=file.seconds, bitrate_kbps=file.bit_rate or 320, tags=tags)
        else:
            return bytes(range(256)) * 16
        return target.read_bytes()

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self._cache, ignore_errors=True)

    # -- protocol --------------------------------------------------------------------------------

    def handle(self, request: LoggedRequest) -> Reply:
        if request.headers.get("x-api-key") != self.api_key:
            return Reply(401)
        path = request.path.removeprefix("/api/v0")
        body = json.loads(request.body) if request.body else None
        m = request.method
        if path == "/application" and m == "GET":
            return self._application()
        if path == "/searches" and m == "POST":
            return self._single_flight(self._search_busy, lambda: self._start_search(body))
        if match := re.fullmatch(r"/searches/([^/]+)(/responses)?", path):
            return self._search(m, match.group(1), bool(match.group(2)))
        if path == "/transfers/downloads" and m == "GET":
            return json_reply(200, [self._user_json(u) for u in self._usernames()])
        if match := re.fullmatch(r"/transfers/downloads/([^/]+)", path):
            username = match.group(1)
            if m == "POST":
                return self._single_flight(
                    self._enqueue_busy, lambda: self._enqueue(username, body)
                )
            if m == "GET":
                if username not in self._usernames():
                    return Reply(404)
                return json_reply(200, self._user_json(username))
        if match := re.fullmatch(r"/transfers/downloads/([^/]+)/([^/]+)", path):
            return self._transfer(m, match.group(2), request.query)
        return Reply(404)

    def _single_flight(self, busy: threading.Lock, action: Any) -> Reply:
        if not busy.acquire(blocking=False):
            with self._lock:
                self.too_many_requests += 1
            return Reply(
                429, b"Only one concurrent operation is permitted.", {"Content-Type": "text/plain"}
            )
        try:
            time.sleep(self.post_hold_s)  # slskd holds the limiter while it starts the work
            reply: Reply = action()
            return reply
        finally:
            busy.release()

    def _application(self) -> Reply:
        state = "Connected, LoggedIn" if self.logged_in else "Disconnected"
        server = {
            "address": "standin:2271",
            "state": state,
            "isConnected": self.logged_in,
            "isLoggedIn": self.logged_in,
            "isTransitioning": False,
        }
        return json_reply(200, {"version": {"full": "0.0.0-standin"}, "server": server})

    def _start_search(self, body: Any) -> Reply:
        if not isinstance(body, dict) or not body.get("searchText"):
            return json_reply(400, "SearchText is required")
        search_id = str(body.get("id") or uuid.uuid4())
        words = _words(str(body["searchText"]))
        responses = []
        for peer in self.peers.values():
            hits = [f for f in peer.files if all(w in _words(f.filename) for w in words)]
            if hits:
                responses.append((peer, hits))
        with self._lock:
            self.searches[search_id] = {
                "text": body["searchText"],
                "polls": 0,
                "stopped": False,
                "responses": responses,
            }
        return json_reply(200, self._search_json(search_id))

    def _search_json(self, search_id: str) -> dict[str, Any]:
        s = self.searches[search_id]
        complete = s["stopped"] or s["polls"] >= self.search_polls
        return {
            "id": search_id,
            "searchText": s["text"],
            "state": ("Completed, Cancelled" if s["stopped"] else "Completed, TimedOut")
            if complete
            else "InProgress",
            "isComplete": complete,
            "responseCount": len(s["responses"]),
            "fileCount": sum(len(h) for _, h in s["responses"]),
        }

    def _search(self, method: str, search_id: str, responses: bool) -> Reply:
        with self._lock:
            if search_id not in self.searches:
                return Reply(404)
            search = self.searches[search_id]
            if method == "DELETE":
                del self.searches[search_id]
                return Reply(204)
            if method == "PUT":
                search["stopped"] = True
                return Reply(200)
            if not responses:
                search["polls"] += 1
                return json_reply(200, self._search_json(search_id))
            return json_reply(200, [self._response_json(p, h) for p, h in search["responses"]])

    @staticmethod
    def _file_json(f: PeerFile) -> dict[str, Any]:
        data: dict[str, Any] = {
            "filename": f.filename,
            "size": f.size,
            "code": 1,
            "extension": "",  # slskd usually sends an empty extension
            "isLocked": f.is_locked,
            "length": f.length,
            "sampleRate": f.sample_rate,
        }
        if f.bit_rate is not None:
            data["bitRate"] = f.bit_rate
        if f.bit_depth is not None:
            data["bitDepth"] = f.bit_depth
        return data

    def _response_json(self, peer: Peer, hits: list[PeerFile]) -> dict[str, Any]:
        free = [self._file_json(f) for f in hits if not f.is_locked]
        locked = [self._file_json(f) for f in hits if f.is_locked]
        return {
            "username": peer.username,
            "fileCount": len(free),
            "files": free,
            "lockedFileCount": len(locked),
            "lockedFiles": locked,
            "hasFreeUploadSlot": peer.has_free_upload_slot,
            "queueLength": peer.queue_length,
            "uploadSpeed": peer.upload_speed,
            "token": 1,
        }

    # -- transfers -------------------------------------------------------------------------------

    def _enqueue(self, username: str, body: Any) -> Reply:
        peer = self.peers.get(username)
        if peer is None:
            return json_reply(500, f"User {username} appears to be offline")
        wanted = body if isinstance(body, list) else []
        created = []
        for item in wanted:
            file = next((f for f in peer.files if f.filename == item.get("filename")), None)
            if file is None:
                return json_reply(500, f"File not shared: {item.get('filename')}")
            created.append(_Transfer(id=str(uuid.uuid4()), username=username, file=file))
        with self._lock:
            for transfer in created:
                self.transfers[transfer.id] = transfer
        return Reply(201)

    def _advance(self, t: _Transfer) -> None:
        """One poll's worth of progress for a transfer (called with the lock held)."""
        if t.state.startswith("Completed") or t.file.polls_to_finish is None:
            return
        t.polls += 1
        if t.polls < t.file.polls_to_finish:
            t.state = "InProgress"
            return
        t.state = t.file.final_state
        write = t.file.write_file
        if write if write is not None else t.state == SUCCEEDED:
            parts = t.file.parts
            target = self.downloads_dir / parts[-2] / parts[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(t.file.content)

    def _transfer_json(self, t: _Transfer) -> dict[str, Any]:
        done = t.state == SUCCEEDED
        return {
            "id": t.id,
            "username": t.username,
            "direction": "Download",
            "filename": t.file.filename,
            "size": t.file.size,
            "startOffset": 0,
            "state": t.state,
            "requestedAt": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t.requested_at)),
            "bytesTransferred": t.file.size if done else 0,
            "averageSpeed": 1000.0,
            "bytesRemaining": 0 if done else t.file.size,
            "percentComplete": 100.0 if done else 0.0,
            "placeInQueue": 3 if t.state == QUEUED else None,
            "exception": "Transfer failed: remote connection closed"
            if "Errored" in t.state
            else None,
        }

    def _usernames(self) -> list[str]:
        with self._lock:
            return sorted({t.username for t in self.transfers.values()})

    def _user_json(self, username: str) -> dict[str, Any]:
        with self._lock:
            mine = [t for t in self.transfers.values() if t.username == username]
            for t in mine:
                self._advance(t)
            directories: dict[str, list[dict[str, Any]]] = {}
            for t in mine:
                directory = t.file.filename.rsplit("\\", 1)[0]
                directories.setdefault(directory, []).append(self._transfer_json(t))
        return {
            "username": username,
            "directories": [
                {"directory": d, "fileCount": len(files), "files": files}
                for d, files in directories.items()
            ],
        }

    def _transfer(self, method: str, transfer_id: str, query: dict[str, list[str]]) -> Reply:
        with self._lock:
            t = self.transfers.get(transfer_id)
            if t is None:
                return Reply(404)
            if method == "GET":
                self._advance(t)
                return json_reply(200, self._transfer_json(t))
            if method == "DELETE":
                if not t.state.startswith("Completed"):
                    t.state = "Completed, Cancelled"
                if query.get("remove") == ["true"]:
                    del self.transfers[transfer_id]
                return Reply(204)
        return Reply(405)
