"""The whole flow through real processes: router, spotify (stand-in backend), folder,
metadata, library and notifications; the CLI's `get`; a module missing; a router crash."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import mutagen
import pytest

from services.kit.testing.sample_audio import DEFAULT_SAMPLE_TRACKS
from soulspot.router.v1 import router_pb2
from tests.helpers.flows import (
    METADATA_ENV,
    Webhook,
    download,
    events,
    folder_env,
    library_tracks,
    run_cli,
    sample_source,
    spotify_env,
    spotify_track,
    start_stack,
    steps,
    track_of,
    wait_event,
    wait_run,
)
from tests.standins.spotify import SpotifyStandin

if TYPE_CHECKING:
    from tests.helpers.mesh import Mesh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HARBOUR = DEFAULT_SAMPLE_TRACKS[0]  # The Paper Lanterns - Harbour Lights, FLAC, 2019
# Where the library's default template files it.
HARBOUR_IN_LIBRARY = "The Paper Lanterns/Night Ferry (2019)/01 - Harbour Lights.flac"


async def test_get_lands_the_track_in_the_library(mesh: Mesh, tmp_path: Path) -> None:
    source = sample_source(tmp_path)
    spotify = SpotifyStandin(tracks=[spotify_track(HARBOUR, 1)])
    spotify.start()
    try:
        with Webhook() as hook:
            notify_env = {
                "SOULSPOT_NOTIFICATIONS__WEBHOOKS": json.dumps(
                    [{"kind": "webhook", "url": hook.url}]
                )
            }
            await start_stack(
                mesh,
                {
                    "spotify": spotify_env(spotify),
                    "folder": folder_env(tmp_path, source),
                    "metadata": METADATA_ENV,
                    "library": None,
                    "notifications": notify_env,
                },
            )

            code, text = await run_cli(
                mesh, "get", "The Paper Lanterns Harbour Lights", "--timeout", "30", timeout_s=40
            )
            assert code == 0, text
            placed = mesh.library_root / HARBOUR_IN_LIBRARY
            assert "ready" in text
            assert placed.name in text.replace("\n", "")

            # The file is in the library under the path template, with its tags written.
            assert placed.is_file()
            tags = mutagen.File(placed, easy=True)
            assert tags is not None
            assert tags["title"] == ["Harbour Lights"]
            assert tags["artist"] == ["The Paper Lanterns"]
            assert tags["album"] == ["Night Ferry"]

            # track.ready closed the pipeline, with the request's correlation id throughout.
            ready_env, ready = await wait_event(mesh, "track.ready")
            assert ready.file.path == str(placed)
            assert list(ready.skipped_steps) == []
            chain = await events(mesh, correlation_id=ready_env.correlation_id)
            kinds = [e.event_type for e in chain]
            for kind in ("download.completed", "download.completed.for_source", "track.ready"):
                assert kind in kinds
            completed = next(e for e in chain if e.event_type == "download.completed")
            assert ready_env.causation_id == completed.event_id

            run = await wait_run(
                mesh, ready.pipeline_run_id, lambda r: r.state == router_pb2.RUN_STATE_COMPLETED
            )
            assert set(steps(run).values()) == {"STEP_STATE_SUCCEEDED"}

            # The notification reached the webhook.
            async with asyncio.timeout(10):
                while not hook.bodies:  # noqa: ASYNC110 (filled by the webhook's thread)
                    await asyncio.sleep(0.05)
            assert "Harbour Lights" in json.dumps(hook.bodies[0])
    finally:
        spotify.stop()


async def test_missing_metadata_defers_enrichment_until_it_is_back(
    mesh: Mesh, tmp_path: Path
) -> None:
    source = sample_source(tmp_path)
    await start_stack(
        mesh, {"folder": folder_env(tmp_path, source), "library": None, "notifications": None}
    )

    correlation_id = uuid.uuid4().hex
    await download(mesh, track_of(HARBOUR), correlation_id)
    _, ready = await wait_event(mesh, "track.ready", correlation_id=correlation_id)
    # The import happened without enrichment (so with only what the request knew: no album
    # or year in the path), and the skip is on record.
    placed = Path(ready.file.path)
    assert placed.is_file()  # noqa: ASYNC240 (a test assertion, not serving code)
    assert placed.is_relative_to(mesh.library_root)
    assert list(ready.skipped_steps) == ["enrich.metadata"]
    _, skipped = await wait_event(mesh, "pipeline.step_skipped", correlation_id=correlation_id)
    assert skipped.capability == "enrich.metadata"
    assert skipped.deferred
    run = await wait_run(mesh, ready.pipeline_run_id, lambda r: True)
    assert steps(run)["enrich.metadata"] == "STEP_STATE_DEFERRED"
    assert steps(run)["import.track"] == "STEP_STATE_SUCCEEDED"

    # Metadata comes back: the deferred enrichment runs on the library's file.
    mesh.start_module("metadata", METADATA_ENV)
    await mesh.wait_serving("metadata")
    run = await wait_run(
        mesh,
        ready.pipeline_run_id,
        lambda r: steps(r)["enrich.metadata"] == "STEP_STATE_SUCCEEDED",
    )
    assert run.steps[0].module == "metadata"
    # It enriched the file where the library put it.
    assert str(placed) in mesh.procs["metadata"].log()


async def test_router_crash_mid_run_resumes_and_imports_once(mesh: Mesh, tmp_path: Path) -> None:
    source = sample_source(tmp_path)
    # No library yet: the run stops at import.track, waiting for a library module.
    await start_stack(
        mesh,
        {"folder": folder_env(tmp_path, source), "metadata": METADATA_ENV, "notifications": None},
    )

    correlation_id = uuid.uuid4().hex
    await download(mesh, track_of(HARBOUR), correlation_id)
    runs = await mesh.pipeline_runs().ListPipelineRuns(router_pb2.ListPipelineRunsRequest())
    async with asyncio.timeout(10):
        while not runs.runs:
            await asyncio.sleep(0.05)
            runs = await mesh.pipeline_runs().ListPipelineRuns(router_pb2.ListPipelineRunsRequest())
    run_id = runs.runs[0].run_id
    run = await wait_run(mesh, run_id, lambda r: steps(r)["import.track"] == "STEP_STATE_RUNNING")
    assert run.state == router_pb2.RUN_STATE_RUNNING
    assert steps(run)["enrich.metadata"] == "STEP_STATE_SUCCEEDED"

    await mesh.kill("router")  # kill -9 in the middle of the run
    mesh.start_module("library")
    mesh.start_router()
    await mesh.wait_serving("router")

    _, ready = await wait_event(mesh, "track.ready", correlation_id=correlation_id, timeout=30)
    assert ready.pipeline_run_id == run_id
    run = await wait_run(mesh, run_id, lambda r: r.state == router_pb2.RUN_STATE_COMPLETED)
    assert steps(run)["import.track"] == "STEP_STATE_SUCCEEDED"
    assert steps(run)["enrich.metadata"] == "STEP_STATE_SUCCEEDED"  # not repeated
    # Imported exactly once: one file in the library, one catalog entry, one track.ready.
    files = [p for p in mesh.library_root.rglob("*") if p.is_file()]
    assert [p.relative_to(mesh.library_root).as_posix() for p in files] == [HARBOUR_IN_LIBRARY]
    assert await library_tracks(mesh) == 1
    readies = await events(mesh, correlation_id=correlation_id, types=("track.ready",))
    assert len(readies) == 1
    assert len(await events(mesh, types=("download.completed.for_source",))) == 1
