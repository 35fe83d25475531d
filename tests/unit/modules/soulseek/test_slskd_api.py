"""SlskdClient against the slskd stand-in."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import httpx
import pytest

from services.kit.support import backoff
from services.soulseek.slskd_api import (
    SlskdAuthError,
    SlskdBusyError,
    SlskdClient,
    SlskdNotFoundError,
    SlskdUnreachableError,
)
from services.soulseek.transfer_state import resolve_outcome
from tests.helpers.recorded_waits import RecordedWaits
from tests.standins.slskd import ERRORED, QUEUED, Peer, PeerFile, SlskdStandin

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

KEY = "test-key"
GOOD = "@@alice\\Music\\The Paper Lanterns\\Night Ferry\\01 - Harbour Lights.flac"
MP3 = "@@bob\\share\\Paper Lanterns\\Night Ferry\\01 - Harbour Lights.mp3"
BROKEN = "@@carol\\Music\\The Paper Lanterns\\Night Ferry (2019)\\01 - Harbour Lights.flac"
STUCK = "@@dave\\Music\\The Paper Lanterns\\Night Ferry\\01 - Harbour Lights.flac"


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    return tmp_path / "downloads"


@pytest.fixture
def standin(downloads: Path) -> Iterator[SlskdStandin]:
    peers = [
        Peer("alice", [PeerFile(GOOD, seconds=1.0, bit_depth=16, polls_to_finish=2)]),
        Peer(
            "bob",
            [PeerFile(MP3, seconds=1.0, bit_rate=320, sample_rate=44100)],
            has_free_upload_slot=False,
            queue_length=7,
            upload_speed=50_000,
        ),
        Peer("carol", [PeerFile(BROKEN, final_state=ERRORED, write_file=True)]),
        Peer("dave", [PeerFile(STUCK, polls_to_finish=None)]),
    ]
    server = SlskdStandin(api_key=KEY, downloads_dir=downloads, peers=peers, search_polls=2)
    server.start()
    yield server
    server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_terminal(client: SlskdClient, user: str, filename: str) -> str:
    for _ in range(20):
        transfer = await client.find_download(user, filename)
        assert transfer is not None
        if transfer.state.is_terminal:
            return transfer.state_text
    raise AssertionError("transfer never finished")


async def test_health_usable(standin: SlskdStandin) -> None:
    async with SlskdClient(standin.base_url, KEY) as client:
        health = await client.health()
    assert health.usable
    assert "logged in" in health.reason


async def test_health_reports_reasons(standin: SlskdStandin) -> None:
    standin.logged_in = False
    async with SlskdClient(standin.base_url, KEY) as client:
        health = await client.health()
    assert not health.usable
    assert "not logged in" in health.reason
    async with SlskdClient(standin.base_url, "wrong") as client:
        health = await client.health()
    assert not health.usable
    assert "API key" in health.reason
    async with SlskdClient(f"http://127.0.0.1:{_free_port()}", KEY, timeout=2) as client:
        health = await client.health()
    assert not health.usable
    assert "unreachable" in health.reason


async def test_errors_are_typed(standin: SlskdStandin) -> None:
    async with SlskdClient(standin.base_url, "wrong") as client:
        with pytest.raises(SlskdAuthError):
            await client.search("anything")
    async with SlskdClient(f"http://127.0.0.1:{_free_port()}", KEY, timeout=2) as client:
        with pytest.raises(SlskdUnreachableError):
            await client.start_search("anything")
    async with SlskdClient(standin.base_url, KEY) as client:
        with pytest.raises(SlskdNotFoundError):
            await client.get_search("00000000-0000-0000-0000-000000000000")


async def test_search_polls_until_complete_and_types_results(standin: SlskdStandin) -> None:
    async with SlskdClient(standin.base_url, KEY) as client:
        result = await client.search("paper lanterns harbour", poll_interval_s=0.01)
    assert not result.timed_out
    assert len(standin.requests_to("/api/v0/searches/", "GET")) >= 2 + 1  # polls + responses
    by_user = {r.username: r for r in result.responses}
    assert set(by_user) == {"alice", "bob", "carol", "dave"}
    bob = by_user["bob"]
    assert not bob.has_free_upload_slot
    assert bob.queue_length == 7
    assert bob.upload_speed == 50_000
    (mp3,) = bob.files
    assert mp3.filename == MP3
    assert mp3.extension == "mp3"  # slskd's empty "extension" is filled from the name
    assert mp3.bit_rate == 320
    assert mp3.sample_rate == 44100
    assert mp3.length_s == 1
    assert mp3.size > 0
    assert by_user["alice"].files[0].bit_depth == 16


async def test_search_wait_is_bounded(standin: SlskdStandin) -> None:
    standin.search_polls = 10_000
    async with SlskdClient(standin.base_url, KEY) as client:
        result = await client.search("harbour", max_wait_s=0.2, poll_interval_s=0.05)
    assert result.timed_out
    assert result.responses  # partial results are still returned
    assert standin.requests_to("/api/v0/searches/", "PUT")  # the search was stopped


async def test_concurrent_searches_are_serialised(standin: SlskdStandin) -> None:
    async with SlskdClient(standin.base_url, KEY) as client:
        ids = await asyncio.gather(*(client.start_search(f"harbour {i}") for i in range(5)))
    assert len(set(ids)) == 5
    assert standin.too_many_requests == 0


async def test_429_from_another_client_is_retried(standin: SlskdStandin) -> None:
    # Separate clients share no lock, like two processes on one slskd: the stand-in answers
    # 429 to overlapping POSTs, and every caller still succeeds through the backoff.
    standin.post_hold_s = 0.1
    clients = [SlskdClient(standin.base_url, KEY, busy_retries=20) for _ in range(3)]
    try:
        ids = await asyncio.gather(*(c.start_search("harbour") for c in clients))
    finally:
        for client in clients:
            await client.aclose()
    assert len(set(ids)) == 3
    assert standin.too_many_requests > 0


async def test_429_waits_grow_jittered_and_stop_at_the_retry_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = RecordedWaits.install(monkeypatch, wanted=100)
    fractions = [0.2, 0.6, 0.4, 0.8]
    draws = iter(fractions)
    monkeypatch.setattr(backoff, "random_fraction", lambda: next(draws))
    posts: list[str] = []

    def always_busy(request: httpx.Request) -> httpx.Response:
        posts.append(request.url.path)
        return httpx.Response(429, text="Only one concurrent operation is permitted.")

    client = SlskdClient(
        "http://slskd.invalid",
        KEY,
        busy_retries=5,
        busy_backoff_first_s=0.05,
        busy_backoff_max_s=2.0,
        transport=httpx.MockTransport(always_busy),
    )
    async with client:
        with pytest.raises(SlskdBusyError, match="after 5 attempts"):
            await client.start_search("harbour")
    assert posts == ["/api/v0/searches"] * 5  # the limit, then no more
    # Equal jitter: half the step plus the drawn share of the other half.
    tops = [client.busy_backoff.ceiling(n) for n in range(4)]
    expected = [top / 2 + f * top / 2 for top, f in zip(tops, fractions, strict=True)]
    assert recorded.waits == pytest.approx(expected)
    assert all(a < b for a, b in zip(recorded.waits, recorded.waits[1:], strict=False))


async def test_enqueue_and_download_succeeds(standin: SlskdStandin, downloads: Path) -> None:
    async with SlskdClient(standin.base_url, KEY) as client:
        result = await client.search("harbour lights", poll_interval_s=0.01)
        alice = next(r for r in result.responses if r.username == "alice")
        await asyncio.gather(
            client.enqueue("alice", alice.files),
            client.enqueue("bob", [(MP3, 123)]),  # concurrent enqueue: serialised, no 429
        )
        assert standin.too_many_requests == 0
        first = await client.find_download("alice", GOOD)
        assert first is not None
        assert not first.state.is_terminal
        state = await _wait_terminal(client, "alice", GOOD)
        transfer = await client.get_download("alice", first.id)
    assert state == "Completed, Succeeded"
    assert transfer.state.succeeded
    outcome = resolve_outcome(transfer.state, downloads, GOOD, alice.files[0].size)
    assert outcome.arrived
    assert outcome.path == downloads / "Night Ferry" / "01 - Harbour Lights.flac"


async def test_errored_transfer_whose_file_arrived(standin: SlskdStandin, downloads: Path) -> None:
    async with SlskdClient(standin.base_url, KEY) as client:
        size = standin.peers["carol"].files[0].size
        await client.enqueue("carol", [(BROKEN, size)])
        state = await _wait_terminal(client, "carol", BROKEN)
    assert state == ERRORED
    outcome = resolve_outcome(state, downloads, BROKEN, size)
    assert outcome.arrived
    assert outcome.path == downloads / "Night Ferry (2019)" / "01 - Harbour Lights.flac"


async def test_stuck_transfer_can_be_cancelled(standin: SlskdStandin) -> None:
    async with SlskdClient(standin.base_url, KEY) as client:
        await client.enqueue("dave", [(STUCK, 1)])
        transfer = await client.find_download("dave", STUCK)
        assert transfer is not None
        for _ in range(3):
            polled = await client.get_download("dave", transfer.id)
            assert polled.state_text == QUEUED
            assert polled.state.queued_remotely
        await client.cancel("dave", transfer.id)
        cancelled = await client.get_download("dave", transfer.id)
        assert cancelled.state.failed
        assert cancelled.state.failure_reason == "Cancelled"
        all_downloads = await client.all_downloads()
        assert [t.id for t in all_downloads] == [transfer.id]
        await client.cancel("dave", transfer.id, remove=True)
        assert await client.user_downloads("dave") == []
