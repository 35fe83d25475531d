"""Driving a mesh of real processes through the download flows: sample audio, the stack's
start-up, downloads and event queries through the router, pipeline runs, a webhook, and the
`soulspot` command line run as a process against the mesh."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import grpc

from services.kit.events.client import unpack_payload
from services.kit.rpc.context import CORRELATION_ID_KEY, MODULE_KEY, metadata_value
from services.kit.testing.sample_audio import DEFAULT_SAMPLE_TRACKS, make_sample_library
from soulspot.capabilities.v1 import (
    download_pb2,
    download_pb2_grpc,
    library_pb2,
    library_pb2_grpc,
)
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2 as download_events_pb2
from soulspot.events.v1 import pipeline_pb2 as pipeline_events_pb2
from soulspot.events.v1 import playlist_pb2 as playlist_events_pb2
from soulspot.events.v1 import track_pb2 as track_events_pb2
from soulspot.router.v1 import router_pb2
from tests.helpers.mesh import ROOT
from tests.standins.spotify import make_track

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from soulspot.events.v1 import envelope_pb2
    from tests.helpers.mesh import Mesh
    from tests.standins.spotify import SpotifyStandin

# unpack_payload finds payload classes in the default descriptor pool: load the contracts.
EVENT_CONTRACTS = (download_events_pb2, pipeline_events_pb2, playlist_events_pb2, track_events_pb2)

CORE = {
    "folder": "download.track",
    "metadata": "enrich.metadata",
    "library": "import.track",
    "notifications": "notify.track_ready",
}


def sample_source(tmp: Path, tracks: list[dict[str, Any]] | None = None) -> Path:
    source = tmp / "source"
    make_sample_library(source, tracks or DEFAULT_SAMPLE_TRACKS[:3])
    return source


def folder_env(tmp: Path, source: Path) -> dict[str, str]:
    return {
        "SOULSPOT_FOLDER__SOURCE_DIR": str(source),
        "SOULSPOT_FOLDER__DOWNLOADS_DIR": str(tmp / "downloads" / "folder"),
    }


# A capability each module serves, to wait until the router routes to it.
ROUTED = {**CORE, "spotify": "search.track", "soulseek": "download.track"}

METADATA_ENV = {"SOULSPOT_METADATA__OFFLINE": "true"}


async def require_pipeline(mesh: Mesh) -> None:
    """The router serves its pipeline (a router without one answers UNIMPLEMENTED and the
    test fails here, not later on a missing track.ready)."""
    await mesh.pipeline_runs().ListPipelineRuns(router_pb2.ListPipelineRunsRequest(), timeout=5)


async def start_stack(mesh: Mesh, modules: dict[str, dict[str, str] | None]) -> None:
    """The router (failing at once when it serves no pipeline), then `modules`,
    each until the router routes its capability."""
    if "router" not in mesh.procs:
        mesh.start_router()
    await mesh.wait_serving("router")
    await require_pipeline(mesh)
    for name, env in modules.items():
        mesh.start_module(name, env)
    for name in modules:
        await mesh.wait_serving(name)
    for name in modules:
        if name in ROUTED:
            await mesh.wait_routable(name, ROUTED[name])


def track_of(sample: dict[str, Any]) -> references_pb2.TrackReference:
    return references_pb2.TrackReference(title=sample["title"], artist=sample["artist"])


async def download(
    mesh: Mesh, track: references_pb2.TrackReference, correlation_id: str
) -> tuple[download_pb2.DownloadTrackResponse, str]:
    """DownloadTrack through the router; (answer, the module that answered)."""
    stub = download_pb2_grpc.DownloadServiceStub(mesh.channel())
    call = stub.DownloadTrack(
        download_pb2.DownloadTrackRequest(track=track, requested_by="cli"),
        metadata=((CORRELATION_ID_KEY, correlation_id),),
        timeout=30,
    )
    answer = await call
    module = metadata_value(await call.initial_metadata(), MODULE_KEY) or metadata_value(
        await call.trailing_metadata(), MODULE_KEY
    )
    return answer, module or ""


async def events(
    mesh: Mesh, *, correlation_id: str = "", types: tuple[str, ...] = ()
) -> list[envelope_pb2.EventEnvelope]:
    reply = await mesh.event_bus().ListEvents(
        router_pb2.ListEventsRequest(
            correlation_id=correlation_id, event_types=list(types), oldest_first=True, limit=1000
        ),
        timeout=5,
    )
    return list(reply.events)


async def wait_event(
    mesh: Mesh,
    event_type: str,
    *,
    correlation_id: str = "",
    where: Callable[[Any], bool] = lambda _payload: True,
    timeout: float = 20.0,  # noqa: ASYNC109 (bounds the whole wait)
) -> tuple[envelope_pb2.EventEnvelope, Any]:
    async with asyncio.timeout(timeout):
        while True:
            for envelope in await events(mesh, correlation_id=correlation_id, types=(event_type,)):
                payload = unpack_payload(envelope)
                if where(payload):
                    return envelope, payload
            await asyncio.sleep(0.1)


async def wait_run(
    mesh: Mesh,
    run_id: str,
    done: Callable[[router_pb2.PipelineRun], bool],
    timeout: float = 20.0,  # noqa: ASYNC109 (bounds the whole wait)
) -> router_pb2.PipelineRun:
    async with asyncio.timeout(timeout):
        while True:
            try:
                reply = await mesh.pipeline_runs().GetPipelineRun(
                    router_pb2.GetPipelineRunRequest(run_id=run_id), timeout=5
                )
                if done(reply.run):
                    return reply.run
            except grpc.aio.AioRpcError:
                pass  # the router may be restarting
            await asyncio.sleep(0.1)


async def library_tracks(mesh: Mesh) -> int:
    stub = library_pb2_grpc.LibraryServiceStub(mesh.channel())
    stats = await stub.GetLibraryStatistics(library_pb2.GetLibraryStatisticsRequest(), timeout=5)
    return int(stats.tracks)


def steps(run: router_pb2.PipelineRun) -> dict[str, str]:
    return {s.capability: router_pb2.StepState.Name(s.state) for s in run.steps}


class Webhook:
    """A local HTTP endpoint that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                try:
                    received.append(json.loads(raw))
                except ValueError:
                    received.append(raw.decode("utf-8", "replace"))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def __enter__(self) -> Webhook:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def spotify_env(standin: SpotifyStandin) -> dict[str, str]:
    return {
        "SOULSPOT_SPOTIFY__CLIENT_ID": standin.client_id,
        "SOULSPOT_SPOTIFY__CLIENT_SECRET": standin.client_secret,
        "SOULSPOT_SPOTIFY__API_URL": standin.base_url,
        "SOULSPOT_SPOTIFY__ACCOUNTS_URL": standin.base_url,
    }


def spotify_track(sample: dict[str, Any], n: int) -> dict[str, Any]:
    return make_track(
        f"sp{n:04d}",
        sample["title"],
        [sample["artist"]],
        sample.get("album", "Singles"),
        duration_ms=int(float(sample.get("seconds", 2.0)) * 1000),
        isrc=sample.get("isrc"),
        release_date=f"{sample.get('year', 2020)}-01-01",
        track_number=int(sample.get("track_number", 1)),
    )


async def start_cli(
    mesh: Mesh,
    *args: str,
    env: dict[str, str] | None = None,
    router: bool = True,
    merge_errors: bool = True,
) -> asyncio.subprocess.Process:
    """`soulspot ARGS` as a process from the repository root: with the router's environment
    (its credentials) once the mesh runs, plus `env`; `--router` the mesh's unless
    router=False; standard error into standard output unless merge_errors=False."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        *args,
        *(("--router", mesh.router_address) if router else ()),
        cwd=ROOT,
        env={**mesh.procs["router"].env, **(env or {})} if mesh.procs else env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_errors else asyncio.subprocess.PIPE,
    )


async def run_cli(mesh: Mesh, *args: str, timeout_s: float = 90.0) -> tuple[int, str]:
    """`soulspot ARGS` run to its end (within `timeout_s`): its exit code and output (standard
    output and error together)."""
    process = await start_cli(mesh, *args)
    output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, output.decode()
