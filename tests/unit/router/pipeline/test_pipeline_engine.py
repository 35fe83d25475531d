"""The pipeline engine against an in-process stand-in of the router's public face.

One gRPC server plays the router: it serves the capability services (as the proxy would),
EventBusService.Publish (recording envelopes) and health per capability service. The engine
cannot tell the difference; the real router and modules are exercised by tests/e2e/flow.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import grpc
import pytest

from router.pipeline import Pipeline, load_pipeline_config
from router.pipeline import store as st
from services.kit.rpc.channel import open_channel
from services.kit.rpc.server import KitServer
from soulspot.events.v1 import download_pb2, envelope_pb2, pipeline_pb2, track_pb2
from soulspot.router.v1 import pipeline_runs_pb2_grpc, router_pb2
from tests.helpers.pipeline_standin import (
    PIPELINE_RUN_SERVICE,
    Mesh,
    completed_event,
    pipeline_for,
    until,
)

if TYPE_CHECKING:
    from pathlib import Path


async def test_full_run_feeds_each_step_and_ends_in_track_ready(mesh: Mesh, tmp_path: Path) -> None:
    pipeline = pipeline_for(mesh, tmp_path)
    await pipeline.start()
    try:
        run_id = await pipeline.handle_download_completed(*completed_event())
        await pipeline.wait_idle()
        # enrich got the download; import got enrich's output; notify got import's output.
        assert mesh.metadata.calls[0].file.path == "/downloads/Harbour Lights.flac"
        assert mesh.library.imports[0].track.album == "Enriched Album"
        assert mesh.library.imports[0].file.checksum == "sum-/downloads/Harbour Lights.flac"
        assert mesh.notify.calls[0].file.path == "/library/Harbour Lights.flac"
        assert mesh.notify.calls[0].pipeline_run_id == run_id

        for_source = mesh.router.of_type("download.completed.for_source")
        ready = mesh.router.of_type("track.ready")
        assert len(for_source) == 1
        assert len(ready) == 1
        source_payload = download_pb2.DownloadCompletedForSource()
        for_source[0].payload.Unpack(source_payload)
        assert source_payload.target_module == "cli"
        assert source_payload.pipeline_run_id == run_id
        ready_payload = track_pb2.TrackReady()
        ready[0].payload.Unpack(ready_payload)
        assert ready_payload.file.path == "/library/Harbour Lights.flac"
        assert ready_payload.track.album == "Enriched Album"
        assert list(ready_payload.skipped_steps) == []
        for event in (for_source[0], ready[0]):
            assert event.correlation_id == "corr-Harbour Lights"
            assert event.causation_id == "ev-1"
            assert event.traceparent.startswith("00-" + "a" * 32)
            assert [h.event_id for h in event.causation_chain] == ["ev-1"]

        run = await pipeline.get_run(run_id)
        assert run is not None
        assert run.state == router_pb2.RUN_STATE_COMPLETED
        assert [s.state for s in run.steps] == [router_pb2.STEP_STATE_SUCCEEDED] * 3
    finally:
        await pipeline.stop()


async def test_same_event_twice_runs_once(mesh: Mesh, tmp_path: Path) -> None:
    pipeline = pipeline_for(mesh, tmp_path)
    await pipeline.start()
    try:
        first = await pipeline.handle_download_completed(*completed_event())
        second = await pipeline.handle_download_completed(*completed_event())
        await pipeline.wait_idle()
        assert first == second
        assert len(mesh.library.imports) == 1
        assert len(mesh.router.of_type("track.ready")) == 1
        assert len(await pipeline.list_runs()) == 1
    finally:
        await pipeline.stop()


async def test_missing_optional_module_defers_then_runs_when_back(
    mesh: Mesh, tmp_path: Path
) -> None:
    await mesh.metadata_up(False)
    pipeline = pipeline_for(mesh, tmp_path)
    await pipeline.start()
    try:
        run_id = await pipeline.handle_download_completed(*completed_event())
        await pipeline.wait_idle()
        assert len(mesh.library.imports) == 1  # the import still happened
        skipped = mesh.router.of_type("pipeline.step_skipped")
        assert len(skipped) == 1
        skipped_payload = pipeline_pb2.PipelineStepSkipped()
        skipped[0].payload.Unpack(skipped_payload)
        assert skipped_payload.capability == "enrich.metadata"
        assert skipped_payload.deferred
        ready = track_pb2.TrackReady()
        mesh.router.of_type("track.ready")[0].payload.Unpack(ready)
        assert list(ready.skipped_steps) == ["enrich.metadata"]
        run = await pipeline.get_run(run_id)
        assert run is not None
        assert run.steps[0].state == router_pb2.STEP_STATE_DEFERRED

        await mesh.metadata_up(True)
        await until(lambda: len(mesh.metadata.calls) == 1)
        # The deferred enrichment works on the file where the library put it.
        assert mesh.metadata.calls[0].file.path == "/library/Harbour Lights.flac"

        async def enriched() -> bool:
            run = await pipeline.get_run(run_id)
            return run is not None and run.steps[0].state == router_pb2.STEP_STATE_SUCCEEDED

        async with asyncio.timeout(5):
            while not await enriched():  # noqa: ASYNC110 (polling the store)
                await asyncio.sleep(0.02)
    finally:
        await pipeline.stop()


async def test_required_step_failure_fails_the_run(mesh: Mesh, tmp_path: Path) -> None:
    mesh.library.broken = True
    pipeline = pipeline_for(mesh, tmp_path)
    await pipeline.start()
    try:
        run_id = await pipeline.handle_download_completed(*completed_event())
        await pipeline.wait_idle()
        failed = mesh.router.of_type("pipeline.run_failed")
        assert len(failed) == 1
        payload = pipeline_pb2.PipelineRunFailed()
        failed[0].payload.Unpack(payload)
        assert payload.capability == "import.track"
        assert "not writable" in payload.reason
        assert mesh.router.of_type("track.ready") == []
        assert mesh.notify.calls == []
        run = await pipeline.get_run(run_id)
        assert run is not None
        assert run.state == router_pb2.RUN_STATE_FAILED
    finally:
        await pipeline.stop()


async def test_interrupted_import_resumes_without_importing_twice(
    mesh: Mesh, tmp_path: Path
) -> None:
    mesh.library.hang = True  # the import takes effect, then the router "dies" mid-call
    pipeline = pipeline_for(mesh, tmp_path)
    await pipeline.start()
    run_id = await pipeline.handle_download_completed(*completed_event())
    await until(lambda: len(mesh.library.imports) == 1)
    # The router's status shows the run in flight, at its import step.
    status = router_pb2.GetStatusResponse()
    pipeline.fill_status(status)
    assert [(w.kind, w.id) for w in status.in_flight] == [("pipeline_run", run_id)]
    assert status.in_flight[0].description.endswith("import.track")
    await pipeline.stop()
    record_store = st.SqliteRunStore(tmp_path / "pipeline.sqlite3")
    record = await record_store.get(run_id)
    await record_store.close()
    assert record is not None
    assert record.steps[1].state == st.STEP_RUNNING

    mesh.library.hang = False
    resumed = pipeline_for(mesh, tmp_path)
    await resumed.start()
    try:
        await until(lambda: len(mesh.router.of_type("track.ready")) == 1)
        await resumed.wait_idle()
        assert len(mesh.library.imports) == 1
        run = await resumed.get_run(run_id)
        assert run is not None
        assert run.state == router_pb2.RUN_STATE_COMPLETED
        assert "already done" in run.steps[1].detail
        # for_source was published again on resume but stored once (derived event id).
        assert len(mesh.router.of_type("download.completed.for_source")) == 1
    finally:
        await resumed.stop()


async def test_runs_are_served_over_grpc(mesh: Mesh, tmp_path: Path) -> None:
    pipeline = pipeline_for(mesh, tmp_path)
    # The pipeline is the PipelineRunService servicer, served as the router serves it.
    runs_server = KitServer("pipeline-runs", grace_s=0.1)
    runs_server.add_service(
        lambda s: pipeline_runs_pb2_grpc.add_PipelineRunServiceServicer_to_server(pipeline, s),
        PIPELINE_RUN_SERVICE,
    )
    await runs_server.start()
    await pipeline.start()
    try:
        run_id = await pipeline.handle_download_completed(*completed_event())
        await pipeline.wait_idle()
        async with open_channel(runs_server.address) as channel:
            stub = pipeline_runs_pb2_grpc.PipelineRunServiceStub(channel)
            runs = await stub.ListPipelineRuns(router_pb2.ListPipelineRunsRequest())
            assert [r.run_id for r in runs.runs] == [run_id]
            assert runs.runs[0].description == "The Paper Lanterns - Harbour Lights"
            one = await stub.GetPipelineRun(router_pb2.GetPipelineRunRequest(run_id=run_id))
            assert one.run.event_id == "ev-1"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetPipelineRun(router_pb2.GetPipelineRunRequest(run_id="nope"))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await pipeline.stop()
        await runs_server.stop(0)


def _completed_at(path: Path) -> tuple[download_pb2.DownloadCompleted, envelope_pb2.EventEnvelope]:
    payload, envelope = completed_event()
    payload.file.path = str(path)
    envelope.payload.Pack(payload)
    return payload, envelope


@pytest.mark.parametrize("kind", ["outside", "symlink", "fifo", "state"])
async def test_a_download_outside_the_downloads_folders_fails_its_run_untouched(
    mesh: Mesh, tmp_path: Path, kind: str
) -> None:
    downloads = tmp_path / "downloads"
    state = tmp_path / "state"
    secret = tmp_path / "etc" / "passwd"
    for folder in (downloads, state, secret.parent):
        folder.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    roots = [downloads]
    if kind == "outside":
        path = secret
    elif kind == "symlink":
        path = downloads / "linked.flac"
        path.symlink_to(secret)
    elif kind == "fifo":
        path = downloads / "pipe.flac"
        os.mkfifo(path)
    else:
        # The router's own event log, with a downloads setting broad enough to contain it.
        path = state / "events.db"
        path.write_bytes(b"SQLite format 3\x00")
        roots = [tmp_path]
    config = load_pipeline_config().model_copy(update={"startup_grace_s": 0.0})
    pipeline = Pipeline(
        mesh.server.address, state, config=config, subscribe=False, download_dirs=roots
    )
    await pipeline.start()
    try:
        run_id = await pipeline.handle_download_completed(*_completed_at(path))
        await pipeline.wait_idle()
        # No step acted on the file, and the run failed with the rule it broke.
        assert mesh.metadata.calls == []
        assert mesh.library.imports == []
        assert mesh.notify.calls == []
        assert path.is_symlink() or path.exists()
        assert secret.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
        failed = mesh.router.of_type("pipeline.run_failed")
        assert len(failed) == 1
        event = pipeline_pb2.PipelineRunFailed()
        failed[0].payload.Unpack(event)
        assert event.pipeline_run_id == run_id
        assert event.reason.startswith("INVALID_ARGUMENT: file.path")
        assert mesh.router.of_type("track.ready") == []
        assert mesh.router.of_type("download.completed.for_source") == []
        run = await pipeline.get_run(run_id)
        assert run is not None
        assert run.state == router_pb2.RUN_STATE_FAILED
        assert run.steps[0].state == router_pb2.STEP_STATE_FAILED
        assert "file.path" in run.steps[0].detail
    finally:
        await pipeline.stop()


async def test_a_download_inside_the_downloads_folders_runs(mesh: Mesh, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    path = downloads / "slskd" / "Harbour Lights.flac"
    path.parent.mkdir()
    path.write_bytes(b"fLaC")
    config = load_pipeline_config().model_copy(update={"startup_grace_s": 0.0})
    pipeline = Pipeline(
        mesh.server.address,
        tmp_path / "state",
        config=config,
        subscribe=False,
        download_dirs=[downloads],
    )
    await pipeline.start()
    try:
        run_id = await pipeline.handle_download_completed(*_completed_at(path))
        await pipeline.wait_idle()
        assert [call.file.path for call in mesh.library.imports] == [str(path)]
        run = await pipeline.get_run(run_id)
        assert run is not None
        assert run.state == router_pb2.RUN_STATE_COMPLETED
    finally:
        await pipeline.stop()
