"""Pipeline runs: the `RunStore` protocol and its SQLite (WAL) store, so a router restart
resumes them. (Routers sharing NATS JetStream keep runs in its KV instead: kv_store.py.)

One run per download.completed event_id (a UNIQUE column): a redelivered event finds its run
instead of starting a second one. Every step records when it started (with its idempotency
key) before its capability is called, and its result when it finished, in one transaction
with the run's context, so a resumed run knows exactly which steps took effect.

All SQLite work runs on one dedicated thread: commits wait for fsync without stalling the
router's event loop, and one connection needs no locking.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from services.kit.support.sqlite import StoreThread, open_wal, transaction
from services.kit.support.timestamps import timestamp_at
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from collections.abc import Sequence

RUN_RUNNING = router_pb2.RUN_STATE_RUNNING
RUN_COMPLETED = router_pb2.RUN_STATE_COMPLETED
RUN_FAILED = router_pb2.RUN_STATE_FAILED
STEP_PENDING = router_pb2.STEP_STATE_PENDING
STEP_RUNNING = router_pb2.STEP_STATE_RUNNING
STEP_SUCCEEDED = router_pb2.STEP_STATE_SUCCEEDED
STEP_DEFERRED = router_pb2.STEP_STATE_DEFERRED
STEP_FAILED = router_pb2.STEP_STATE_FAILED
STEP_SKIPPED = router_pb2.STEP_STATE_SKIPPED

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    correlation_id TEXT NOT NULL DEFAULT '',
    state INTEGER NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    trigger BLOB NOT NULL,
    context TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs(state);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs(started_at);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    idx INTEGER NOT NULL,
    step_id TEXT NOT NULL,
    capability TEXT NOT NULL,
    required INTEGER NOT NULL,
    state INTEGER NOT NULL,
    module TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    PRIMARY KEY (run_id, idx)
);
CREATE INDEX IF NOT EXISTS steps_by_state ON steps(state, capability);
"""


@dataclass(slots=True)
class StepRecord:
    idx: int
    step_id: str
    capability: str
    required: bool
    state: int
    module: str = ""
    detail: str = ""
    attempts: int = 0
    idempotency_key: str = ""

    def to_proto(self) -> router_pb2.PipelineStep:
        return router_pb2.PipelineStep(
            capability=self.capability,
            state=self.state,  # type: ignore[arg-type]
            module=self.module,
            detail=self.detail,
            attempts=self.attempts,
            required=self.required,
        )


@dataclass(slots=True)
class RunRecord:
    run_id: str
    event_id: str
    correlation_id: str
    state: int
    description: str
    trigger: bytes
    context: dict[str, Any]
    started_at: float
    updated_at: float
    error: str = ""
    steps: list[StepRecord] = field(default_factory=list)

    def to_proto(self) -> router_pb2.PipelineRun:
        run = router_pb2.PipelineRun(
            run_id=self.run_id,
            event_id=self.event_id,
            correlation_id=self.correlation_id,
            state=self.state,  # type: ignore[arg-type]
            description=self.description,
            started_at=timestamp_at(self.started_at),
            updated_at=timestamp_at(self.updated_at),
        )
        run.steps.extend(step.to_proto() for step in self.steps)
        return run


@dataclass(frozen=True, slots=True)
class NewStep:
    step_id: str
    capability: str
    required: bool


class LeaseLost(Exception):
    """Another router took this run over (its owner looked dead): stop working on it."""

    def __init__(self, run_id: str, owner: str) -> None:
        super().__init__(f"pipeline run {run_id} now belongs to {owner or 'nobody'}")
        self.run_id = run_id
        self.owner = owner


class RunStore(Protocol):
    """Where pipeline runs live. create_run is the claim: of every router that calls it for
    the same event_id, exactly one gets created=True and runs it."""

    # How often the engine should call take_over; None: the store is this router's alone.
    takeover_interval_s: float | None

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create_run(
        self,
        *,
        event_id: str,
        correlation_id: str,
        description: str,
        trigger: bytes,
        context: dict[str, Any],
        steps: Sequence[NewStep],
    ) -> tuple[str, bool]: ...

    async def get(self, run_id: str) -> RunRecord | None: ...

    async def get_by_event(self, event_id: str) -> RunRecord | None: ...

    async def list_runs(self, limit: int = 50, state: int | None = None) -> list[RunRecord]: ...

    async def resumable(self) -> list[RunRecord]:
        """Unfinished runs this router should resume now (at start)."""
        ...

    async def take_over(self) -> list[str]:
        """Run ids this router just took over from a router that stopped renewing its lease."""
        ...

    async def deferred(self) -> list[tuple[str, int, str]]: ...

    async def step_started(self, run_id: str, idx: int, *, state: int = STEP_RUNNING) -> int: ...

    async def step_finished(
        self,
        run_id: str,
        idx: int,
        state: int,
        *,
        module: str = "",
        detail: str = "",
        result: dict[str, Any] | None = None,
    ) -> None: ...

    async def set_state(self, run_id: str, state: int, error: str = "") -> None: ...


class _SyncStore:
    def __init__(self, path: Path) -> None:
        # NORMAL in WAL mode survives a process crash (kill -9); only a power cut can lose the
        # last commits. Step bookkeeping accepts that (a resumed run re-checks a step it lost
        # track of); creating a run does not: its event is acked right after, so that commit
        # is made FULL (fsynced) in create_run.
        self.db = open_wal(path, synchronous="NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def create_run(
        self,
        event_id: str,
        correlation_id: str,
        description: str,
        trigger: bytes,
        context: dict[str, Any],
        steps: Sequence[NewStep],
    ) -> tuple[str, bool]:
        now = time.time()
        run_id = uuid.uuid4().hex
        context = {**context, "run_id": run_id}
        self.db.execute("PRAGMA synchronous=FULL")
        try:
            return self._create_run(
                run_id, now, event_id, correlation_id, description, trigger, context, steps
            )
        finally:
            self.db.execute("PRAGMA synchronous=NORMAL")

    def _create_run(
        self,
        run_id: str,
        now: float,
        event_id: str,
        correlation_id: str,
        description: str,
        trigger: bytes,
        context: dict[str, Any],
        steps: Sequence[NewStep],
    ) -> tuple[str, bool]:
        with transaction(self.db):
            row = self.db.execute(
                "SELECT run_id FROM runs WHERE event_id = ?", (event_id,)
            ).fetchone()
            if row is not None:
                return str(row[0]), False  # already created: the transaction wrote nothing
            self.db.execute(
                "INSERT INTO runs (run_id, event_id, correlation_id, state, description,"
                " trigger, context, started_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    event_id,
                    correlation_id,
                    RUN_RUNNING,
                    description,
                    trigger,
                    json.dumps(context),
                    now,
                    now,
                ),
            )
            self.db.executemany(
                "INSERT INTO steps (run_id, idx, step_id, capability, required, state,"
                " idempotency_key) VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        idx,
                        s.step_id,
                        s.capability,
                        int(s.required),
                        STEP_PENDING,
                        f"{run_id}:{s.step_id}",
                    )
                    for idx, s in enumerate(steps)
                ],
            )
        return run_id, True

    def _steps(self, run_id: str) -> list[StepRecord]:
        rows = self.db.execute(
            "SELECT idx, step_id, capability, required, state, module, detail, attempts,"
            " idempotency_key FROM steps WHERE run_id = ? ORDER BY idx",
            (run_id,),
        ).fetchall()
        return [
            StepRecord(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], r[7], r[8]) for r in rows
        ]

    def _run(self, row: tuple[Any, ...]) -> RunRecord:
        record = RunRecord(
            run_id=row[0],
            event_id=row[1],
            correlation_id=row[2],
            state=row[3],
            description=row[4],
            trigger=bytes(row[5]),
            context=json.loads(row[6]),
            error=row[7],
            started_at=row[8],
            updated_at=row[9],
        )
        record.steps = self._steps(record.run_id)
        return record

    _COLUMNS = (
        "run_id, event_id, correlation_id, state, description, trigger, context, error,"
        " started_at, updated_at"
    )

    def _one(self, column: Literal["run_id", "event_id"], value: str) -> RunRecord | None:
        row = self.db.execute(
            f"SELECT {self._COLUMNS} FROM runs WHERE {column} = ?", (value,)
        ).fetchone()
        return self._run(row) if row is not None else None

    def get(self, run_id: str) -> RunRecord | None:
        return self._one("run_id", run_id)

    def get_by_event(self, event_id: str) -> RunRecord | None:
        return self._one("event_id", event_id)

    def list_runs(self, limit: int, state: int | None = None) -> list[RunRecord]:
        if state is None:
            rows = self.db.execute(
                f"SELECT {self._COLUMNS} FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
        else:
            rows = self.db.execute(
                f"SELECT {self._COLUMNS} FROM runs WHERE state = ?"
                " ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (state, limit),
            ).fetchall()
        return [self._run(r) for r in rows]

    def deferred(self) -> list[tuple[str, int, str]]:
        """(run_id, idx, capability) of every deferred step, oldest run first."""
        rows = self.db.execute(
            "SELECT s.run_id, s.idx, s.capability FROM steps s JOIN runs r USING (run_id)"
            " WHERE s.state = ? ORDER BY r.started_at, s.idx",
            (STEP_DEFERRED,),
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def step_started(self, run_id: str, idx: int, state: int) -> int:
        now = time.time()
        with transaction(self.db):
            self.db.execute(
                "UPDATE steps SET state = ?, attempts = attempts + 1, started_at = ?"
                " WHERE run_id = ? AND idx = ?",
                (state, now, run_id, idx),
            )
            self.db.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", (now, run_id))
            row = self.db.execute(
                "SELECT attempts FROM steps WHERE run_id = ? AND idx = ?", (run_id, idx)
            ).fetchone()
        return int(row[0]) if row else 0

    def step_finished(
        self,
        run_id: str,
        idx: int,
        state: int,
        *,
        module: str = "",
        detail: str = "",
        result: dict[str, Any] | None = None,
    ) -> None:
        """Record a step's outcome and (when given) its result in the run's context, at once."""
        now = time.time()
        with transaction(self.db):
            if result is not None:
                row = self.db.execute(
                    "SELECT r.context, s.step_id FROM runs r JOIN steps s USING (run_id)"
                    " WHERE r.run_id = ? AND s.idx = ?",
                    (run_id, idx),
                ).fetchone()
                context = json.loads(row[0])
                context.setdefault("steps", {})[row[1]] = result
                self.db.execute(
                    "UPDATE runs SET context = ? WHERE run_id = ?", (json.dumps(context), run_id)
                )
            self.db.execute(
                "UPDATE steps SET state = ?, module = ?, detail = ?, finished_at = ?"
                " WHERE run_id = ? AND idx = ?",
                (state, module, detail, now, run_id, idx),
            )
            self.db.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", (now, run_id))

    def set_state(self, run_id: str, state: int, error: str = "") -> None:
        self.db.execute(
            "UPDATE runs SET state = ?, error = ?, updated_at = ? WHERE run_id = ?",
            (state, error, time.time(), run_id),
        )


class SqliteRunStore:
    """The SQLite run store's async face; every call runs on the store's own thread. One
    router's alone: it resumes every unfinished run at start and takes nothing over."""

    takeover_interval_s: float | None = None

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._thread = StoreThread(lambda: _SyncStore(self._path), thread_name="pipeline-store")
        self._call = self._thread.call

    async def open(self) -> None:
        await self._thread.open()

    async def close(self) -> None:
        await self._thread.close()

    async def create_run(
        self,
        *,
        event_id: str,
        correlation_id: str,
        description: str,
        trigger: bytes,
        context: dict[str, Any],
        steps: Sequence[NewStep],
    ) -> tuple[str, bool]:
        """(run_id, created): created is False when the event already has a run."""
        return await self._call(
            lambda s: s.create_run(event_id, correlation_id, description, trigger, context, steps)
        )

    async def get(self, run_id: str) -> RunRecord | None:
        return await self._call(lambda s: s.get(run_id))

    async def get_by_event(self, event_id: str) -> RunRecord | None:
        return await self._call(lambda s: s.get_by_event(event_id))

    async def list_runs(self, limit: int = 50, state: int | None = None) -> list[RunRecord]:
        return await self._call(lambda s: s.list_runs(limit, state))

    async def resumable(self) -> list[RunRecord]:
        return await self.list_runs(limit=1_000_000, state=RUN_RUNNING)

    async def take_over(self) -> list[str]:
        return []

    async def deferred(self) -> list[tuple[str, int, str]]:
        return await self._call(lambda s: s.deferred())

    async def step_started(self, run_id: str, idx: int, *, state: int = STEP_RUNNING) -> int:
        """Count an attempt and mark the step `state` (RUNNING; a deferred step retried later
        stays DEFERRED, so a crash during the retry leaves it deferred, not half-run in a
        finished run); returns its attempt number."""
        return await self._call(lambda s: s.step_started(run_id, idx, state))

    async def step_finished(
        self,
        run_id: str,
        idx: int,
        state: int,
        *,
        module: str = "",
        detail: str = "",
        result: dict[str, Any] | None = None,
    ) -> None:
        await self._call(
            lambda s: s.step_finished(
                run_id, idx, state, module=module, detail=detail, result=result
            )
        )

    async def set_state(self, run_id: str, state: int, error: str = "") -> None:
        await self._call(lambda s: s.set_state(run_id, state, error))
