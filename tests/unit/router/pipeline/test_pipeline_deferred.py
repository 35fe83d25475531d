"""Deferred pipeline steps outlive the router: after a restart, every deferred step runs once
its module serves again, each on its own run's file.

The router's public face is tests/helpers/pipeline_standin.py's `Mesh`: one gRPC server with
the capability services, the bus's Publish and health per capability service.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from soulspot.router.v1 import router_pb2
from tests.helpers.pipeline_standin import Mesh, completed_event, pipeline_for, until

if TYPE_CHECKING:
    from pathlib import Path

    from router.pipeline import Pipeline

TITLES = ("Harbour Lights", "Paper Moons")


async def _enrich_state(pipeline: Pipeline, run_id: str) -> tuple[int, str]:
    run = await pipeline.get_run(run_id)
    assert run is not None
    return run.steps[0].state, run.steps[0].detail


async def test_deferred_steps_of_two_runs_run_after_a_restart_when_the_module_is_back(
    mesh: Mesh, tmp_path: Path
) -> None:
    await mesh.metadata_up(False)
    first = pipeline_for(mesh, tmp_path)
    await first.start()
    try:
        run_ids = [
            await first.handle_download_completed(*completed_event(title, event_id=f"ev-{n}"))
            for n, title in enumerate(TITLES)
        ]
        await first.wait_idle()
        for run_id in run_ids:
            state, _detail = await _enrich_state(first, run_id)
            assert state == router_pb2.STEP_STATE_DEFERRED
    finally:
        await first.stop()
    assert mesh.metadata.calls == []
    assert len(mesh.library.imports) == 2

    # A new router on the same state: nothing in memory says a step waits, only its store.
    restarted = pipeline_for(mesh, tmp_path)
    await restarted.start()
    try:
        await asyncio.sleep(0.3)  # more than a sweep: still nothing to run it on
        assert mesh.metadata.calls == []
        await mesh.metadata_up(True)
        await until(lambda: len(mesh.metadata.calls) == 2)
        # Each deferred enrichment works on the file where the library put its own track.
        assert sorted(c.file.path for c in mesh.metadata.calls) == sorted(
            f"/library/{title}.flac" for title in TITLES
        )

        async def all_enriched() -> bool:
            states = [await _enrich_state(restarted, run_id) for run_id in run_ids]
            return states == [
                (router_pb2.STEP_STATE_SUCCEEDED, "ran after its module came back")
            ] * len(run_ids)

        async with asyncio.timeout(5):
            while not await all_enriched():  # noqa: ASYNC110 (polling the store)
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # another sweep finds nothing left to run
        assert len(mesh.metadata.calls) == 2
        assert len(mesh.library.imports) == 2  # the runs' other steps did not run again
    finally:
        await restarted.stop()
