"""A soulseek restart: slskd keeps transferring, the new process follows the same download."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from services.kit.channel import open_channel
from services.kit.download_registry import DownloadRegistry
from services.kit.download_store import FILE_NAME
from services.kit.module_runner import ModuleRuntime
from services.soulseek.module import SPEC
from services.soulseek.settings import SoulseekSection, SoulseekSettings
from soulspot.capabilities.v1 import download_pb2, download_pb2_grpc
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2 as ev
from tests.standins.slskd import QUEUED, Peer, PeerFile, SlskdStandin
from tests.unit.modules.module_support import event_types, eventually, make_bus, payloads

if TYPE_CHECKING:
    from collections.abc import Iterator

    from services.kit.events import InMemoryBus

API_KEY = "test-key"
State = download_pb2.DownloadState
TRACK = references_pb2.TrackReference(
    title="Harbour Lights", artist="The Paper Lanterns", album="Night Ferry", duration_ms=1000
)
REMOTE = "@@alice\\Music\\The Paper Lanterns\\Night Ferry\\01 - Harbour Lights.flac"


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


def runtime(settings: SoulseekSettings, bus: InMemoryBus) -> ModuleRuntime:
    return ModuleRuntime(SPEC, settings, port=0, publisher=bus, connect_router=False)


async def _status(rt: ModuleRuntime, download_id: str) -> download_pb2.GetDownloadResponse:
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
