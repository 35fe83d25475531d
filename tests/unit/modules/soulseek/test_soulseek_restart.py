"""A soulseek restart: slskd keeps transferring, the new process follows the same download."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from services.domain.downloads.registry import DownloadRecord, DownloadRegistry
from services.domain.downloads.store import FILE_NAME
from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel
from services.soulseek.module import SPEC
from services.soulseek.settings import SoulseekSection, SoulseekSettings
from services.soulseek.slskd_api import SlskdClient
from soulspot.capabilities.v1 import download_pb2, download_pb2_grpc
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2 as ev
from tests.helpers.module_checks import event_types, eventually, make_bus, payloads
from tests.standins.slskd import ERRORED, QUEUED, SUCCEEDED, Peer, PeerFile, SlskdStandin

if TYPE_CHECKING:
    from collections.abc import Iterator

    from services.kit.events.client import InMemoryBus

API_KEY = "test-key"
State = download_pb2.DownloadState
TRACK = references_pb2.TrackReference(
    title="Harbour Lights", artist="The Paper Lanterns", album="Night Ferry", duration_ms=1000
)
REMOTE = "@@alice\\Music\\The Paper Lanterns\\Night Ferry\\01 - Harbour Lights.flac"
# Ranks below alice's flac: the next candidate when hers fails.
BOB_REMOTE = "@@bob\\Music\\The Paper Lanterns\\Night Ferry\\01 - Harbour Lights.mp3"


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    path = tmp_path / "downloads"
    path.mkdir()
    return path


@pytest.fixture
def standin(downloads: Path) -> Iterator[SlskdStandin]:
    server = SlskdStandin(api_key=API_KEY, downloads_dir=downloads, post_hold_s=0.01)
    server.start()
    yield server
    server.stop()


def settings_for(url: str, downloads: Path, state: Path) -> SoulseekSettings:
    section = SoulseekSection(
        url=url,
        api_key=API_KEY,
        downloads_dir=downloads,
        poll_interval_s=0.02,
        search_max_wait_s=5.0,
        progress_interval_s=0.0,
        probe_interval_s=60.0,
    )
    return SoulseekSettings(soulseek=section, router_address="", state_dir=state)


def runtime(settings: SoulseekSettings, bus: InMemoryBus) -> ModuleRuntime[SoulseekSection]:
    return ModuleRuntime(SPEC, settings, port=0, publisher=bus, connect_router=False)


def _enqueued_from(standin: SlskdStandin) -> list[str]:
    """The users slskd was asked to download from, in order."""
    return [
        r.path.rsplit("/", 1)[-1]
        for r in standin.requests
        if r.method == "POST" and "/transfers/downloads/" in r.path
    ]


def _stored_plans(state: Path) -> int:
    with sqlite3.connect(state / "soulseek" / FILE_NAME) as db:
        (count,) = db.execute("SELECT count(*) FROM soulseek_candidates").fetchone()
    return int(count)


async def _status(
    rt: ModuleRuntime[SoulseekSection], download_id: str
) -> download_pb2.GetDownloadResponse:
    async with open_channel(f"127.0.0.1:{rt.port}") as channel:
        stub = download_pb2_grpc.DownloadServiceStub(channel)
        request = download_pb2.GetDownloadRequest(download_id=download_id)
        reply: download_pb2.GetDownloadResponse = await stub.GetDownload(request, timeout=5)
        return reply


@pytest.mark.parametrize("remote_state", ["queued", "in progress"])
async def test_a_transfer_enqueued_before_a_restart_completes_after_it(
    remote_state: str, standin: SlskdStandin, downloads: Path, tmp_path: Path
) -> None:
    # The peer holds the transfer (queued, or started and slow) until the test lets it go.
    peer_file = PeerFile(REMOTE, polls_to_finish=None if remote_state == "queued" else 10**6)
    standin.add_peer(Peer("alice", [peer_file]))
    settings = settings_for(standin.base_url, downloads, tmp_path / "state")

    first_bus = make_bus()
    async with runtime(settings, first_bus) as first:
        async with open_channel(f"127.0.0.1:{first.port}") as channel:
            stub = download_pb2_grpc.DownloadServiceStub(channel)
            reply = await stub.DownloadTrack(
                download_pb2.DownloadTrackRequest(track=TRACK, requested_by="cli"), timeout=10
            )
        wanted = (
            State.DOWNLOAD_STATE_QUEUED
            if remote_state == "queued"
            else State.DOWNLOAD_STATE_IN_PROGRESS
        )

        async def followed() -> bool:
            return (await _status(first, reply.download_id)).state == wanted

        await eventually(followed, what=f"the transfer to be {remote_state}")
        await eventually(lambda: "download.progress" in event_types(first_bus))
    assert "download.completed" not in event_types(first_bus)
    (transfer,) = standin.transfers.values()
    assert transfer.state == (QUEUED if remote_state == "queued" else "InProgress")

    # While the module is down, slskd lets the transfer through.
    peer_file.polls_to_finish = transfer.polls + 1

    second_bus = make_bus()
    async with runtime(settings, second_bus) as second:
        # The id handed out by the first process is known at once (not NOT_FOUND).
        assert (await _status(second, reply.download_id)).download_id == reply.download_id

        async def completed() -> bool:
            return bool(payloads(second_bus, "download.completed"))

        await eventually(completed, what="download.completed from the new process")
        status = await _status(second, reply.download_id)
        assert status.state == State.DOWNLOAD_STATE_COMPLETED, status.error
        done = payloads(second_bus, "download.completed")
        assert [(d.download_id, d.source, d.requested_by) for d in done] == [
            (reply.download_id, "alice", "cli")
        ]
        assert Path(done[0].file.path).name == "01 - Harbour Lights.flac"
        assert payloads(second_bus, "download.failed") == []
        # Followed, not started again: one enqueue at slskd, one download.started in all.
        enqueues = [r for r in standin.requests if r.method == "POST" and "/transfers/" in r.path]
        assert len(enqueues) == 1
        assert "download.started" not in event_types(second_bus)
        async with open_channel(f"127.0.0.1:{second.port}") as channel:
            stub = download_pb2_grpc.DownloadServiceStub(channel)
            stats = await stub.GetDownloadStatistics(download_pb2.GetDownloadStatisticsRequest())
        assert (stats.started, stats.completed, stats.active) == (1, 1, 0)


async def test_a_download_still_searching_at_a_restart_is_failed_for_a_retry(
    standin: SlskdStandin, downloads: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    # What a process stopped in the middle of a search leaves in its file.
    earlier = DownloadRegistry(
        make_bus(), module="soulseek", db_path=state / "soulseek" / FILE_NAME
    )
    record = earlier.new(TRACK, "cli")
    await earlier.shutdown()

    bus = make_bus()
    async with runtime(settings_for(standin.base_url, downloads, state), bus) as rt:
        await eventually(lambda: bool(payloads(bus, "download.failed")), what="download.failed")
        (failed,) = payloads(bus, "download.failed")
        assert failed.download_id == record.download_id
        assert failed.can_retry
        assert failed.kind == ev.FAILURE_KIND_TRANSFER_FAILED
        status = await _status(rt, record.download_id)
        assert status.state == State.DOWNLOAD_STATE_FAILED
        assert "restart" in status.error
    # Nothing was asked of slskd for it.
    assert not [r for r in standin.requests if r.method == "POST"]


@pytest.mark.parametrize("next_ends", ["completed", "errored"])
async def test_a_transfer_failing_after_a_restart_goes_on_with_the_next_candidate(
    next_ends: str, standin: SlskdStandin, downloads: Path, tmp_path: Path
) -> None:
    # alice's transfer starts and holds; bob's file would be next.
    alice_file = PeerFile(REMOTE, polls_to_finish=10**6)
    bob_file = PeerFile(
        BOB_REMOTE, bit_rate=320, final_state=SUCCEEDED if next_ends == "completed" else ERRORED
    )
    standin.add_peer(Peer("alice", [alice_file]))
    standin.add_peer(Peer("bob", [bob_file]))
    state = tmp_path / "state"
    settings = settings_for(standin.base_url, downloads, state)

    first_bus = make_bus()
    async with runtime(settings, first_bus) as first:
        async with open_channel(f"127.0.0.1:{first.port}") as channel:
            stub = download_pb2_grpc.DownloadServiceStub(channel)
            reply = await stub.DownloadTrack(
                download_pb2.DownloadTrackRequest(track=TRACK, requested_by="cli"), timeout=10
            )
        assert (reply.source, reply.candidates) == ("alice", 2)

        async def in_progress() -> bool:
            status = await _status(first, reply.download_id)
            return status.state == State.DOWNLOAD_STATE_IN_PROGRESS

        await eventually(in_progress, what="alice's transfer to be in progress")
    assert _enqueued_from(standin) == ["alice"]
    (transfer,) = standin.transfers.values()

    # While the module is down, alice's transfer breaks off.
    alice_file.final_state = ERRORED
    alice_file.polls_to_finish = transfer.polls + 1

    second_bus = make_bus()
    async with runtime(settings, second_bus) as second:

        async def ended() -> bool:
            return any(
                t in event_types(second_bus) for t in ("download.completed", "download.failed")
            )

        await eventually(ended, what="the download to end in the new process")
        status = await _status(second, reply.download_id)
        # bob is asked for the file by the new process, once, as without a restart.
        assert _enqueued_from(standin) == ["alice", "bob"]
        started = payloads(second_bus, "download.started")
        assert [(s.source, s.attempt) for s in started] == [("bob", 2)]
        record: DownloadRecord = second.extras["registry"].get(reply.download_id)
        assert record.tried_sources == ["alice", "bob"]
        if next_ends == "completed":
            assert status.state == State.DOWNLOAD_STATE_COMPLETED, status.error
            assert status.source == "bob"
            assert Path(status.file.path).name == "01 - Harbour Lights.mp3"
            assert payloads(second_bus, "download.failed") == []
            async with open_channel(f"127.0.0.1:{second.port}") as channel:
                stub = download_pb2_grpc.DownloadServiceStub(channel)
                stats = await stub.GetDownloadStatistics(
                    download_pb2.GetDownloadStatisticsRequest()
                )
            assert (stats.started, stats.completed, stats.candidate_retries) == (1, 1, 1)
        else:
            # None left: failed for a retry, naming every source and why each failed.
            assert status.state == State.DOWNLOAD_STATE_FAILED
            (failed,) = payloads(second_bus, "download.failed")
            assert failed.can_retry
            assert failed.kind == ev.FAILURE_KIND_TRANSFER_FAILED
            assert (list(failed.tried_sources), failed.attempts) == (["alice", "bob"], 2)
            assert failed.reason.startswith("all 2 candidates failed: alice: ")
            assert "followed again after a restart" in failed.reason
            assert "bob: " in failed.reason
    # An ended download leaves no candidates behind.
    assert _stored_plans(state) == 0


async def test_a_transfer_without_stored_candidates_fails_after_a_restart_as_before(
    standin: SlskdStandin, downloads: Path, tmp_path: Path
) -> None:
    # What a version that kept the candidates in memory leaves: a record following alice,
    # in a file without the candidates table, and her transfer at slskd.
    alice_file = PeerFile(REMOTE, final_state=ERRORED)
    standin.add_peer(Peer("alice", [alice_file]))
    standin.add_peer(Peer("bob", [PeerFile(BOB_REMOTE, bit_rate=320)]))
    state = tmp_path / "state"
    earlier = DownloadRegistry(
        make_bus(), module="soulseek", db_path=state / "soulseek" / FILE_NAME
    )
    record = earlier.new(TRACK, "cli")
    record.source, record.remote_filename = "alice", REMOTE
    record.expected_size = alice_file.size
    record.tried_sources.append("alice")
    record.state = State.DOWNLOAD_STATE_QUEUED
    earlier.save(record)
    await earlier.shutdown()
    client = SlskdClient(standin.base_url, API_KEY)
    try:
        await client.enqueue("alice", [(REMOTE, alice_file.size)])
    finally:
        await client.aclose()

    bus = make_bus()
    async with runtime(settings_for(standin.base_url, downloads, state), bus):
        await eventually(lambda: bool(payloads(bus, "download.failed")), what="download.failed")
        (failed,) = payloads(bus, "download.failed")
        assert failed.download_id == record.download_id
        assert failed.can_retry
        assert list(failed.tried_sources) == ["alice"]
        assert failed.reason.startswith("alice: ")
        assert failed.reason.endswith("(followed again after a restart)")
    # No candidate was known to go on with.
    assert _enqueued_from(standin) == ["alice"]
