"""Async client for the slskd REST API (``/api/v0``), authenticated with ``X-API-Key``.

slskd facts this client is shaped around:

* ``POST /searches`` and ``POST /transfers/downloads/{username}`` each admit one request at a
  time and answer HTTP 429 to an overlapping one. Those calls are serialised in-process with an
  ``asyncio.Lock`` and, because other processes may share the daemon, 429 is still retried with
  jittered exponential backoff.
* A search returns at once; it is polled until ``isComplete`` and its responses are fetched
  separately.
* Transfer states are flag strings, parsed by :mod:`services.soulseek.transfer_state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from services.kit.support.backoff import Backoff, BackoffPolicy
from services.kit.support.http_client import PooledHttpClient
from services.soulseek.transfer_state import TransferState, parse_state

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CandidateFile",
    "SearchResponse",
    "SearchResult",
    "SearchStatus",
    "SlskdAuthError",
    "SlskdBusyError",
    "SlskdClient",
    "SlskdError",
    "SlskdHealth",
    "SlskdNotFoundError",
    "SlskdRequestError",
    "SlskdUnreachableError",
    "Transfer",
]

# ---------------------------------------------------------------------------------------------
# Errors


class SlskdError(Exception):
    """Any failure talking to slskd."""


class SlskdUnreachableError(SlskdError):
    """slskd could not be reached (connection refused, DNS, timeout)."""


class SlskdAuthError(SlskdError):
    """slskd rejected the API key (HTTP 401/403)."""


class SlskdBusyError(SlskdError):
    """slskd kept answering 429 (one search/enqueue at a time) past the retry budget."""


class SlskdNotFoundError(SlskdError):
    """The search or transfer does not exist (HTTP 404)."""


class SlskdRequestError(SlskdError):
    """Any other non-success answer; carries the status and body text."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"slskd {method} {path} answered {status}: {body[:300]}")
        self.status = status
        self.body = body


class _TooManyRequests(Exception):
    """Internal: a 429 to retry."""


# ---------------------------------------------------------------------------------------------
# Typed results


def _ext(filename: str, declared: str | None) -> str:
    # slskd often sends an empty "extension"; the file name is the reliable source.
    if declared:
        return declared.lower().lstrip(".")
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


def _opt_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class CandidateFile:
    """One file in a peer's search response."""

    filename: str
    size: int
    bit_rate: int | None = None
    bit_depth: int | None = None
    sample_rate: int | None = None
    length_s: int | None = None
    extension: str = ""
    is_locked: bool = False

    @classmethod
    def from_api(cls, data: dict[str, Any], *, locked: bool = False) -> CandidateFile:
        filename = str(data.get("filename", ""))
        return cls(
            filename=filename,
            size=int(data.get("size") or 0),
            bit_rate=_opt_int(data.get("bitRate")),
            bit_depth=_opt_int(data.get("bitDepth")),
            sample_rate=_opt_int(data.get("sampleRate")),
            length_s=_opt_int(data.get("length")),
            extension=_ext(filename, data.get("extension")),
            is_locked=bool(data.get("isLocked", locked)),
        )


@dataclass(frozen=True)
class SearchResponse:
    """One peer's answer to a search."""

    username: str
    has_free_upload_slot: bool
    queue_length: int
    upload_speed: int
    files: tuple[CandidateFile, ...]
    locked_files: tuple[CandidateFile, ...] = ()

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> SearchResponse:
        return cls(
            username=str(data.get("username", "")),
            has_free_upload_slot=bool(data.get("hasFreeUploadSlot", False)),
            queue_length=int(data.get("queueLength") or 0),
            upload_speed=int(data.get("uploadSpeed") or 0),
            files=tuple(CandidateFile.from_api(f) for f in data.get("files") or []),
            locked_files=tuple(
                CandidateFile.from_api(f, locked=True) for f in data.get("lockedFiles") or []
            ),
        )


@dataclass(frozen=True)
class SearchStatus:
    id: str
    search_text: str
    state: str
    is_complete: bool
    response_count: int
    file_count: int

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> SearchStatus:
        state = str(data.get("state", ""))
        return cls(
            id=str(data.get("id", "")),
            search_text=str(data.get("searchText", "")),
            state=state,
            is_complete=bool(data.get("isComplete", state.startswith("Completed"))),
            response_count=int(data.get("responseCount") or 0),
            file_count=int(data.get("fileCount") or 0),
        )


@dataclass(frozen=True)
class SearchResult:
    """A finished (or stopped at the deadline) search with its responses."""

    id: str
    query: str
    state: str
    timed_out: bool
    responses: tuple[SearchResponse, ...]


@dataclass(frozen=True)
class Transfer:
    """One download as slskd tracks it."""

    id: str
    username: str
    filename: str
    size: int
    state_text: str
    state: TransferState
    bytes_transferred: int = 0
    percent_complete: float = 0.0
    average_speed: float = 0.0
    place_in_queue: int | None = None
    exception: str | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Transfer:
        text = str(data.get("state", ""))
        return cls(
            id=str(data.get("id", "")),
            username=str(data.get("username", "")),
            filename=str(data.get("filename", "")),
            size=int(data.get("size") or 0),
            state_text=text,
            state=parse_state(text),
            bytes_transferred=int(data.get("bytesTransferred") or 0),
            percent_complete=float(data.get("percentComplete") or 0.0),
            average_speed=float(data.get("averageSpeed") or 0.0),
            place_in_queue=_opt_int(data.get("placeInQueue")),
            exception=str(data["exception"]) if data.get("exception") else None,
        )


@dataclass(frozen=True)
class SlskdHealth:
    usable: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def _flatten_user_downloads(data: Any) -> list[Transfer]:
    """Transfers out of slskd's user -> directories -> files grouping."""
    users = data if isinstance(data, list) else [data]
    out: list[Transfer] = []
    for user in users:
        if not isinstance(user, dict):
            continue
        for directory in user.get("directories") or []:
            out.extend(Transfer.from_api(f) for f in directory.get("files") or [])
    return out


# ---------------------------------------------------------------------------------------------
# Client


class SlskdClient(PooledHttpClient):
    """slskd REST client. Use as ``async with SlskdClient(url, key) as client``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 15.0,
        busy_retries: int = 8,
        busy_backoff_first_s: float = 0.05,
        busy_backoff_max_s: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=f"{self.base_url}/api/v0",
            headers={"X-API-Key": api_key, "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )
        # One lock per slskd endpoint that admits a single request at a time: a search and an
        # enqueue may overlap, two searches may not.
        self._search_lock = asyncio.Lock()
        self._enqueue_lock = asyncio.Lock()
        # `busy_retries` counts attempts, the first included.
        self._busy_retries = max(1, busy_retries)
        # Equal jitter: callers in other processes that met the same 429 spread out, and none
        # comes back so soon that it meets the same running operation again.
        self.busy_backoff = BackoffPolicy(
            initial_s=min(busy_backoff_first_s, busy_backoff_max_s),
            cap_s=busy_backoff_max_s,
            jitter="equal",
        )

    # -- plumbing ------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        try:
            response = await self._http.request(method, path, json=json, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise SlskdUnreachableError(f"slskd unreachable at {self.base_url}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise SlskdUnreachableError(
                f"slskd at {self.base_url} timed out on {method} {path}"
            ) from exc
        except httpx.TransportError as exc:
            raise SlskdUnreachableError(f"slskd transport error: {exc}") from exc
        if response.status_code in (401, 403):
            raise SlskdAuthError(
                f"slskd rejected the API key ({response.status_code}) on {method} {path}"
            )
        if response.status_code == 429:
            raise _TooManyRequests
        if response.status_code == 404:
            raise SlskdNotFoundError(f"slskd {method} {path}: not found")
        if response.status_code >= 400:
            raise SlskdRequestError(method, path, response.status_code, response.text)
        return response

    async def _single_flight(
        self, lock: asyncio.Lock, method: str, path: str, json: Any
    ) -> httpx.Response:
        """A call slskd admits one at a time: under the lock, with 429 retried."""
        async with lock:
            backoff = Backoff(self.busy_backoff)
            for attempt in range(1, self._busy_retries + 1):
                try:
                    return await self._request(method, path, json=json)
                except _TooManyRequests as exc:
                    if attempt == self._busy_retries:
                        raise SlskdBusyError(
                            f"slskd kept answering 429 to {method} {path} "
                            f"after {self._busy_retries} attempts"
                        ) from exc
                await backoff.wait()
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    # -- searches ------------------------------------------------------------------------------

    async def start_search(self, query: str, *, search_timeout_ms: int = 15000) -> str:
        """Start a network search and return its id (slskd answers before results arrive)."""
        search_id = str(uuid.uuid4())
        body = {"id": search_id, "searchText": query, "searchTimeout": search_timeout_ms}
        response = await self._single_flight(self._search_lock, "POST", "/searches", body)
        data = response.json() if response.content else {}
        return str(data.get("id") or search_id) if isinstance(data, dict) else search_id

    async def get_search(self, search_id: str) -> SearchStatus:
        response = await self._request("GET", f"/searches/{search_id}")
        return SearchStatus.from_api(response.json())

    async def wait_for_search(
        self, search_id: str, *, max_wait_s: float = 30.0, poll_interval_s: float = 0.5
    ) -> tuple[SearchStatus, bool]:
        """Poll until complete or the deadline; returns (status, timed_out)."""
        deadline = time.monotonic() + max_wait_s
        while True:
            status = await self.get_search(search_id)
            if status.is_complete:
                return status, False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return status, True
            await asyncio.sleep(min(poll_interval_s, remaining))

    async def stop_search(self, search_id: str) -> None:
        await self._request("PUT", f"/searches/{search_id}")

    async def delete_search(self, search_id: str) -> None:
        await self._request("DELETE", f"/searches/{search_id}")

    async def search_responses(self, search_id: str) -> list[SearchResponse]:
        response = await self._request("GET", f"/searches/{search_id}/responses")
        data = response.json()
        return [SearchResponse.from_api(r) for r in data if isinstance(r, dict)]

    async def search(
        self,
        query: str,
        *,
        max_wait_s: float = 30.0,
        poll_interval_s: float = 0.5,
        search_timeout_ms: int = 15000,
    ) -> SearchResult:
        """Search, wait (bounded) for completion, and return every peer's response.

        At the deadline the search is stopped and whatever arrived so far is returned, with
        ``timed_out`` set: partial results are more useful to the ranker than none.
        """
        search_id = await self.start_search(query, search_timeout_ms=search_timeout_ms)
        status, timed_out = await self.wait_for_search(
            search_id, max_wait_s=max_wait_s, poll_interval_s=poll_interval_s
        )
        if timed_out:
            with contextlib.suppress(SlskdNotFoundError):
                await self.stop_search(search_id)
        responses = await self.search_responses(search_id)
        return SearchResult(
            id=search_id,
            query=query,
            state=status.state,
            timed_out=timed_out,
            responses=tuple(responses),
        )

    # -- transfers -----------------------------------------------------------------------------

    async def enqueue(
        self, username: str, files: Sequence[CandidateFile | tuple[str, int]]
    ) -> None:
        """Ask slskd to download ``files`` from ``username``."""
        body = []
        for item in files:
            if isinstance(item, CandidateFile):
                body.append({"filename": item.filename, "size": item.size})
            else:
                body.append({"filename": item[0], "size": item[1]})
        await self._single_flight(
            self._enqueue_lock, "POST", f"/transfers/downloads/{username}", body
        )

    async def user_downloads(self, username: str) -> list[Transfer]:
        """Every download from ``username`` (empty when slskd has none: it answers 404)."""
        try:
            response = await self._request("GET", f"/transfers/downloads/{username}")
        except SlskdNotFoundError:
            return []
        return _flatten_user_downloads(response.json())

    async def all_downloads(self) -> list[Transfer]:
        response = await self._request("GET", "/transfers/downloads")
        return _flatten_user_downloads(response.json())

    async def get_download(self, username: str, transfer_id: str) -> Transfer:
        response = await self._request("GET", f"/transfers/downloads/{username}/{transfer_id}")
        return Transfer.from_api(response.json())

    async def find_download(self, username: str, filename: str) -> Transfer | None:
        """The newest-listed download of ``filename`` from ``username``, if any."""
        matches = [t for t in await self.user_downloads(username) if t.filename == filename]
        return matches[-1] if matches else None

    async def cancel(self, username: str, transfer_id: str, *, remove: bool = False) -> None:
        await self._request(
            "DELETE",
            f"/transfers/downloads/{username}/{transfer_id}",
            params={"remove": str(remove).lower()},
        )

    # -- health --------------------------------------------------------------------------------

    async def health(self) -> SlskdHealth:
        """Is slskd usable: reachable, key accepted, and logged in to the Soulseek server."""
        try:
            response = await self._request("GET", "/application")
        except SlskdUnreachableError as exc:
            return SlskdHealth(False, str(exc))
        except SlskdAuthError as exc:
            return SlskdHealth(False, f"{exc}: check the slskd API key")
        except SlskdError as exc:
            return SlskdHealth(False, f"slskd answered unexpectedly: {exc}")
        try:
            data = response.json()
        except ValueError:
            return SlskdHealth(False, "slskd /application did not return JSON")
        server = data.get("server") or {} if isinstance(data, dict) else {}
        if server.get("isLoggedIn") or ("isLoggedIn" not in server and server.get("isConnected")):
            return SlskdHealth(True, "slskd is connected and logged in", {"server": server})
        state = server.get("state") or "unknown"
        return SlskdHealth(
            False,
            f"slskd is running but not logged in to the Soulseek server (state: {state})",
            {"server": server},
        )
