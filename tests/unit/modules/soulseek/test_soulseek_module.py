"""The soulseek module end to end against the slskd stand-in, over a real gRPC server."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel
from services.soulseek.module import SPEC
from services.soulseek.settings import SoulseekSection, SoulseekSettings
from soulspot.capabilities.v1 import download_pb2, download_pb2_grpc
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2 as ev
from tests.helpers.module_checks import (
    event_types,
    eventually,
    health_status,
    make_bus,
    payloads,
    reflected_services,
    rpc_error,
    violated_fields,
)
from tests.standins.slskd import ERRORED, Peer, PeerFile, SlskdStandin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

API_KEY = "test-key"
SERVICE = "soulspot.capabilities.v1.DownloadService"
State = download_pb2.DownloadState
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING

TRACK = references_pb2.TrackReference(
    title="Harbour Lights", artist="The Paper Lanterns", album="Night Ferry", duration_ms=1000
)


def remote(user: str, name: str, folder: str = "Night Ferry") -> str:
    return f"@@{user}\\Music\\The Paper Lanterns\\{folder}\\{name}"


class Harness:
    def __init__(self, standin: SlskdStandin, downloads: Path, bus: Any) -> None:
        self.standin = standin
        self.downloads = downloads
        self.bus = bus
        self.runtime: ModuleRuntime[SoulseekSection] | None = None
        self.stub: download_pb2_grpc.DownloadServiceAsyncStub | None = None
        self.channel: grpc.aio.Channel | None = None

    async def download(self, **kwargs: Any) -> download_pb2.DownloadTrackResponse:
        assert self.stub is not None
        request = download_pb2.DownloadTrackRequest(track=kwargs.pop("track", TRACK), **kwargs)
        return await self.stub.DownloadTrack(request, timeout=10)

    async def finished(self, download_id: str) -> download_pb2.GetDownloadResponse:
        assert self.stub is not None
        stub = self.stub
        box: list[download_pb2.GetDownloadResponse] = []

        async def done() -> bool:
            reply = await stub.GetDownload(download_pb2.GetDownloadRequest(download_id=download_id))
            box[:] = [reply]
            return reply.state in (
                State.DOWNLOAD_STATE_COMPLETED,
                State.DOWNLOAD_STATE_FAILED,
                State.DOWNLOAD_STATE_CANCELLED,
            )

        await eventually(done, what=f"download {download_id} to end")
        # The terminal event is published right after the state changes.
        await eventually(
            lambda: any(
                t in event_types(self.bus) for t in ("download.completed", "download.failed")
            ),
            what="the terminal event",
        )
        return box[0]


def settings_for(url: str, downloads: Path, **overrides: Any) -> SoulseekSettings:
    section = SoulseekSection(
        url=url,
        api_key=overrides.pop("api_key", API_KEY),
        downloads_dir=downloads,
        poll_interval_s=0.02,
        search_max_wait_s=5.0,
        progress_interval_s=0.0,
        probe_interval_s=60.0,
        **overrides,
    )
    return SoulseekSettings(soulseek=section, router_address="")


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


@pytest.fixture
async def harness(standin: SlskdStandin, downloads: Path) -> AsyncIterator[Harness]:
    h = Harness(standin, downloads, make_bus())
    settings = settings_for(standin.base_url, downloads)
    async with ModuleRuntime(SPEC, settings, port=0, publisher=h.bus, connect_router=False) as rt:
        h.runtime = rt
        async with open_channel(f"127.0.0.1:{rt.port}") as channel:
            h.channel = channel
            h.stub = download_pb2_grpc.DownloadServiceStub(channel)
            yield h


async def test_success_locates_the_file_and_publishes_events_in_order(harness: Harness) -> None:
    harness.standin.add_peer(
        Peer("alice", [PeerFile(remote("alice", "01 - Harbour Lights.flac"), polls_to_finish=2)])
    )
    reply = await harness.download(requested_by="cli")
    assert reply.download_id
    assert reply.source == "alice"
    assert reply.state == State.DOWNLOAD_STATE_QUEUED
    assert reply.remote_filename.endswith("01 - Harbour Lights.flac")
    assert reply.candidates == 1

    status = await harness.finished(reply.download_id)
    assert status.state == State.DOWNLOAD_STATE_COMPLETED, status.error
    path = Path(status.file.path)
    # slskd's layout: <downloads>/<remote folder>/<file name>.
    assert path == (harness.downloads / "Night Ferry" / "01 - Harbour Lights.flac").resolve()
    data = await asyncio.to_thread(path.read_bytes)
    assert status.file.size_bytes == len(data)
    assert status.file.checksum == hashlib.sha256(data).hexdigest()
    assert status.file.format == references_pb2.AUDIO_FORMAT_FLAC

    types = event_types(harness.bus)
    assert types[0] == "download.started"
    assert types[-1] == "download.completed"
    assert set(types[1:-1]) <= {"download.progress"}
    completed = payloads(harness.bus, "download.completed")[0]
    assert completed.download_id == reply.download_id
    assert completed.file.checksum == status.file.checksum
    assert completed.requested_by == "cli"
    assert completed.source == "alice"


async def test_errored_first_candidate_falls_back_to_the_next(harness: Harness) -> None:
    # The flac ranks first (lossless preferred) but its transfer errors.
    harness.standin.add_peer(
        Peer("alice", [PeerFile(remote("alice", "01 - Harbour Lights.flac"), final_state=ERRORED)])
    )
    harness.standin.add_peer(
        Peer("bob", [PeerFile(remote("bob", "01 - Harbour Lights.mp3"), bit_rate=320)])
    )
    reply = await harness.download()
    assert reply.source == "alice"
    status = await harness.finished(reply.download_id)
    assert status.state == State.DOWNLOAD_STATE_COMPLETED, status.error
    assert status.source == "bob"
    assert Path(status.file.path).name == "01 - Harbour Lights.mp3"
    started = payloads(harness.bus, "download.started")
    assert [(s.source, s.attempt) for s in started] == [("alice", 1), ("bob", 2)]
    assert payloads(harness.bus, "download.failed") == []
    assert harness.stub is not None
    stats = await harness.stub.GetDownloadStatistics(download_pb2.GetDownloadStatisticsRequest())
    assert (stats.started, stats.completed, stats.candidate_retries) == (1, 1, 1)


async def test_reported_error_with_the_whole_file_on_disk_is_a_completion(
    harness: Harness,
) -> None:
    harness.standin.add_peer(
        Peer(
            "alice",
            [
                PeerFile(
                    remote("alice", "01 - Harbour Lights.flac"),
                    final_state=ERRORED,
                    write_file=True,
                )
            ],
        )
    )
    reply = await harness.download()
    status = await harness.finished(reply.download_id)
    assert status.state == State.DOWNLOAD_STATE_COMPLETED, status.error
    assert [s.attempt for s in payloads(harness.bus, "download.started")] == [1]
    assert payloads(harness.bus, "download.failed") == []


async def test_every_candidate_failing_publishes_failed_with_retry(harness: Harness) -> None:
    for user in ("alice", "bob"):
        harness.standin.add_peer(
            Peer(user, [PeerFile(remote(user, "01 - Harbour Lights.flac"), final_state=ERRORED)])
        )
    reply = await harness.download()
    status = await harness.finished(reply.download_id)
    assert status.state == State.DOWNLOAD_STATE_FAILED
    failed = payloads(harness.bus, "download.failed")
    assert len(failed) == 1
    assert failed[0].can_retry
    assert failed[0].kind == ev.FAILURE_KIND_TRANSFER_FAILED
    assert sorted(failed[0].tried_sources) == ["alice", "bob"]
    assert failed[0].attempts == 2
    assert "Errored" in failed[0].reason


async def test_live_version_is_rejected_unless_asked(harness: Harness) -> None:
    harness.standin.add_peer(
        Peer("alice", [PeerFile(remote("alice", "01 - Harbour Lights (Live).flac", "Live 2020"))])
    )
    harness.standin.add_peer(
        Peer("bob", [PeerFile(remote("bob", "01 - Harbour Lights.mp3"), bit_rate=320)])
    )
    plain = await harness.download()
    assert plain.source == "bob"
    assert "Live" not in plain.remote_filename
    await harness.finished(plain.download_id)

    live_title = references_pb2.TrackReference()
    live_title.CopyFrom(TRACK)
    live_title.title = "Harbour Lights (Live)"
    asked = await harness.download(track=live_title)
    assert asked.source == "alice"

    allowed = await harness.download(
        quality=references_pb2.QualityPolicy(allowed_versions=["live"], prefer_lossless=True)
    )
    assert allowed.source == "alice"


async def test_only_a_live_version_gives_not_found_and_failed_event(harness: Harness) -> None:
    harness.standin.add_peer(
        Peer("alice", [PeerFile(remote("alice", "01 - Harbour Lights (Live).flac"))])
    )
    assert harness.stub is not None
    error = await rpc_error(harness.download())
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert "unwanted version: live" in error.message
    await eventually(lambda: bool(payloads(harness.bus, "download.failed")))
    failed = payloads(harness.bus, "download.failed")[0]
    assert failed.kind == ev.FAILURE_KIND_NO_ACCEPTABLE_CANDIDATE
    assert failed.can_retry


async def test_bitrate_floor(harness: Harness) -> None:
    harness.standin.add_peer(
        Peer("alice", [PeerFile(remote("alice", "01 - Harbour Lights.mp3"), bit_rate=128)])
    )
    error = await rpc_error(harness.download())
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert "below bitrate floor" in error.message  # the default floor is 192 kbps

    lowered = await harness.download(quality=references_pb2.QualityPolicy(min_bitrate_kbps=96))
    assert lowered.source == "alice"
    status = await harness.finished(lowered.download_id)
    assert status.state == State.DOWNLOAD_STATE_COMPLETED, status.error


async def test_concurrent_downloads_never_overlap_searches_or_enqueues(harness: Harness) -> None:
    titles = ["Harbour Lights", "Salt and Static", "Night Ferry Blues", "Lantern Song"]
    harness.standin.add_peer(
        Peer("alice", [PeerFile(remote("alice", f"0{i} - {t}.flac")) for i, t in enumerate(titles)])
    )
    tracks = [references_pb2.TrackReference(title=t, artist="The Paper Lanterns") for t in titles]
    replies = await asyncio.gather(*(harness.download(track=t) for t in tracks))
    for reply in replies:
        status = await harness.finished(reply.download_id)
        assert status.state == State.DOWNLOAD_STATE_COMPLETED, status.error
    # slskd answers an overlapping search or enqueue with 429: the module serialises them.
    assert harness.standin.too_many_requests == 0
    posts = [r for r in harness.standin.requests if r.method == "POST"]
    assert len(posts) == 2 * len(titles)


async def test_cancel_a_queued_download(harness: Harness) -> None:
    harness.standin.add_peer(
        Peer("alice", [PeerFile(remote("alice", "01 - Harbour Lights.flac"), polls_to_finish=None)])
    )
    reply = await harness.download()
    assert harness.stub is not None
    cancelled = await harness.stub.CancelDownload(
        download_pb2.CancelDownloadRequest(download_id=reply.download_id)
    )
    assert cancelled.state == State.DOWNLOAD_STATE_CANCELLED
    failed = payloads(harness.bus, "download.failed")
    assert [f.kind for f in failed] == [ev.FAILURE_KIND_CANCELLED]
    assert not failed[0].can_retry
    transfers = list(harness.standin.transfers.values())
    assert [t.state for t in transfers] == ["Completed, Cancelled"]


async def test_unknown_download_id_is_not_found(harness: Harness) -> None:
    assert harness.stub is not None
    error = await rpc_error(
        harness.stub.GetDownload(download_pb2.GetDownloadRequest(download_id="nope"))
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
    error = await rpc_error(
        harness.stub.CancelDownload(download_pb2.CancelDownloadRequest(download_id="nope"))
    )
    assert error.code == grpc.StatusCode.NOT_FOUND


async def test_missing_title_is_invalid_argument_naming_the_field(harness: Harness) -> None:
    error = await rpc_error(
        harness.download(track=references_pb2.TrackReference(artist="The Paper Lanterns"))
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["track.title"]
    assert harness.standin.requests == [] or all(
        r.path.endswith("/application") for r in harness.standin.requests
    )


async def test_health_and_reflection(harness: Harness) -> None:
    assert harness.channel is not None
    assert await health_status(harness.channel, SERVICE) == SERVING
    services = await reflected_services(harness.channel)
    assert {SERVICE, "grpc.health.v1.Health"} <= services


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("problem", ["unreachable", "bad key", "not configured"])
async def test_unusable_slskd_is_not_serving_with_a_reason(
    problem: str, standin: SlskdStandin, downloads: Path
) -> None:
    if problem == "unreachable":
        settings = settings_for(f"http://127.0.0.1:{_closed_port()}", downloads)
        expected = "unreachable"
    elif problem == "bad key":
        settings = settings_for(standin.base_url, downloads, api_key="wrong")
        expected = "API key"
    else:
        settings = settings_for("", downloads)
        expected = "SOULSPOT_SOULSEEK__URL"
    bus = make_bus()
    async with (
        ModuleRuntime(SPEC, settings, port=0, publisher=bus, connect_router=False) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        assert await health_status(channel, SERVICE) == NOT_SERVING
        serving, reason = rt.health.status(SERVICE) or (True, None)
        assert not serving
        assert expected in (reason or "")
        stub = download_pb2_grpc.DownloadServiceStub(channel)
        error = await rpc_error(stub.DownloadTrack(download_pb2.DownloadTrackRequest(track=TRACK)))
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert expected in error.message


async def test_health_recovers_when_slskd_comes_back(
    standin: SlskdStandin, downloads: Path
) -> None:
    standin.logged_in = False
    settings = settings_for(standin.base_url, downloads)
    async with (
        ModuleRuntime(SPEC, settings, port=0, publisher=make_bus(), connect_router=False) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        assert await health_status(channel, SERVICE) == NOT_SERVING
        assert "not logged in" in (rt.health_reason or "")
        standin.logged_in = True
        standin.add_peer(Peer("alice", [PeerFile(remote("alice", "01 - Harbour Lights.flac"))]))
        # A call re-probes a module marked down instead of trusting a stale status.
        stub = download_pb2_grpc.DownloadServiceStub(channel)
        reply = await stub.DownloadTrack(download_pb2.DownloadTrackRequest(track=TRACK))
        assert reply.source == "alice"
        assert await health_status(channel, SERVICE) == SERVING


async def test_a_stalled_candidate_is_replaced(standin: SlskdStandin, downloads: Path) -> None:
    standin.add_peer(
        Peer("alice", [PeerFile(remote("alice", "01 - Harbour Lights.flac"), polls_to_finish=None)])
    )
    standin.add_peer(
        Peer("bob", [PeerFile(remote("bob", "01 - Harbour Lights.mp3"), bit_rate=320)])
    )
    settings = settings_for(standin.base_url, downloads, stall_timeout_s=0.3)
    bus = make_bus()
    async with (
        ModuleRuntime(SPEC, settings, port=0, publisher=bus, connect_router=False) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        h = Harness(standin, downloads, bus)
        h.stub = download_pb2_grpc.DownloadServiceStub(channel)
        reply = await h.download()
        assert reply.source == "alice"
        status = await h.finished(reply.download_id)
        assert status.state == State.DOWNLOAD_STATE_COMPLETED, status.error
        assert status.source == "bob"
        # The stalled transfer is cancelled at slskd, not left queued forever.
        states = {t.username: t.state for t in standin.transfers.values()}
        assert states["alice"] == "Completed, Cancelled"


async def test_require_lossless_refuses_lossy_files(harness: Harness) -> None:
    harness.standin.add_peer(
        Peer("bob", [PeerFile(remote("bob", "01 - Harbour Lights.mp3"), bit_rate=320)])
    )
    error = await rpc_error(
        harness.download(quality=references_pb2.QualityPolicy(require_lossless=True))
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert "format not allowed" in error.message


async def test_asking_twice_for_the_same_track_downloads_it_once(harness: Harness) -> None:
    harness.standin.add_peer(
        Peer("alice", [PeerFile(remote("alice", "01 - Harbour Lights.flac"), polls_to_finish=3)])
    )
    first, second = await asyncio.gather(harness.download(), harness.download())
    assert first.download_id == second.download_id
    await harness.finished(first.download_id)
    enqueues = [
        r for r in harness.standin.requests if r.path.startswith("/api/v0/transfers/downloads/")
    ]
    assert len([r for r in enqueues if r.method == "POST"]) == 1
