"""The pipeline run store: one run per event, step bookkeeping, survival across reopen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.pipeline import store as st
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from pathlib import Path

STEPS = [
    st.NewStep("enrich.metadata", "enrich.metadata", False),
    st.NewStep("import.track", "import.track", True),
]


async def _create(store: st.SqliteRunStore, event_id: str = "ev-1") -> tuple[str, bool]:
    return await store.create_run(
        event_id=event_id,
        correlation_id="corr-1",
        description="A - B",
        trigger=b"\x01\x02",
        context={"track": {"title": "B"}, "steps": {}},
        steps=STEPS,
    )


async def test_one_run_per_event(tmp_path: Path) -> None:
    store = st.SqliteRunStore(tmp_path / "p.db")
    try:
        run_id, created = await _create(store)
        again, created_again = await _create(store)
        assert created
        assert not created_again
        assert again == run_id
        runs = await store.list_runs()
        assert [r.run_id for r in runs] == [run_id]
    finally:
        await store.close()


async def test_steps_record_attempts_results_and_state(tmp_path: Path) -> None:
    store = st.SqliteRunStore(tmp_path / "p.db")
    try:
        run_id, _ = await _create(store)
        assert await store.step_started(run_id, 0) == 1
        assert await store.step_started(run_id, 0) == 2
        await store.step_finished(
            run_id, 0, st.STEP_SUCCEEDED, module="metadata", result={"file": {"path": "x"}}
        )
        await store.step_started(run_id, 1)
        record = await store.get(run_id)
        assert record is not None
        assert record.context["run_id"] == run_id
        assert record.context["steps"]["enrich.metadata"] == {"file": {"path": "x"}}
        assert [(s.state, s.attempts, s.module) for s in record.steps] == [
            (st.STEP_SUCCEEDED, 2, "metadata"),
            (st.STEP_RUNNING, 1, ""),
        ]
        assert record.steps[1].idempotency_key == f"{run_id}:import.track"
        proto = record.to_proto()
        assert proto.state == router_pb2.RUN_STATE_RUNNING
        assert proto.steps[1].required
        assert proto.correlation_id == "corr-1"
    finally:
        await store.close()


async def test_state_survives_reopen(tmp_path: Path) -> None:
    store = st.SqliteRunStore(tmp_path / "p.db")
    run_id, _ = await _create(store)
    await store.step_started(run_id, 0)
    await store.close()

    reopened = st.SqliteRunStore(tmp_path / "p.db")
    try:
        running = await reopened.list_runs(state=st.RUN_RUNNING)
        assert [r.run_id for r in running] == [run_id]
        assert running[0].steps[0].state == st.STEP_RUNNING
        assert running[0].trigger == b"\x01\x02"
        assert (await reopened.get_by_event("ev-1")) is not None
    finally:
        await reopened.close()


async def test_deferred_steps_and_final_state(tmp_path: Path) -> None:
    store = st.SqliteRunStore(tmp_path / "p.db")
    try:
        first, _ = await _create(store, "ev-1")
        second, _ = await _create(store, "ev-2")
        await store.step_finished(first, 0, st.STEP_DEFERRED, detail="UNAVAILABLE")
        await store.step_finished(second, 0, st.STEP_SUCCEEDED)
        await store.set_state(first, st.RUN_COMPLETED)
        assert await store.deferred() == [(first, 0, "enrich.metadata")]
        # A retry of a deferred step keeps it deferred until it finishes.
        await store.step_started(first, 0, state=st.STEP_DEFERRED)
        assert await store.deferred() == [(first, 0, "enrich.metadata")]
        completed = await store.list_runs(state=st.RUN_COMPLETED)
        assert [r.run_id for r in completed] == [first]
        assert (await store.get("nope")) is None
        newest_first = await store.list_runs(limit=1)
        assert [r.run_id for r in newest_first] == [second]
    finally:
        await store.close()
