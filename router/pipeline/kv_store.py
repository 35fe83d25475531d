"""Pipeline runs in NATS JetStream KV, shared by every router on the same NATS, so each
download.completed runs its pipeline once across routers and a dead router's runs go on.

Keys of the bucket:

- `runs.<run_id>`: the whole run (steps, context, trigger) and its `owner`, one JSON value.
  The run id is derived from the event id, so every router computes the same key; creating it
  is KV create (create-if-absent): of all routers handed the same event, exactly one creates
  it and runs it, the others find it and leave it.
- `routers.<owner>`: each router's lease, rewritten every `lease_s / 3` seconds. Its revision
  is the heartbeat: no clock is compared across hosts.
- `deferred.<owner>.<run_id>`: the index of deferred steps, one key per run of `owner` that
  has any (their indexes and capabilities, and when the run started), so the deferred sweep
  reads this router's deferred steps in one listing instead of reading every run. The run
  is the truth and is written first; the index follows it. Where the two can disagree (a
  router that died between the writes, one that stalled while its run was taken over), a
  run whose owner died is taken over and indexed again by its new owner, a router reading a
  run its index wrongly names drops that entry, and a router's first scan at start
  rebuilds its own entries.

Every write to a run is a compare-and-set on the revision read, and is refused when the run's
owner is no longer this router (LeaseLost): a router that stalled and came back cannot
overwrite the router that took over. Takeover: every router reads the leases every
`lease_s / 2`; a lease whose revision has not moved for `lease_s` on this router's own clock,
or that is gone (a router deletes its lease when it stops), is dead, and its live runs
(RUNNING, or with a deferred step) are taken by compare-and-set of their owner, so only one
router wins each. The winner resumes them as a restarted router would: steps that had started
are checked before they run again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

import nats.js.errors as js_errors

from router.bus.jetstream.kv_bucket import KvBucketStore, key_token, purge_keys
from router.pipeline import store as st

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from nats.js.kv import KeyValue

_log = logging.getLogger("router.pipeline.kv")
_T = TypeVar("_T")

DEFAULT_BUCKET = "soulspot_pipeline_runs"
# Run ids are uuid5 of the event id in this namespace: the same id on every router.
_RUN_NAMESPACE = uuid.UUID("6f1c3c1e-4f7e-5d2a-9b1e-5015907a0c01")
_RUNS = "runs."
_ROUTERS = "routers."
_DEFERRED = "deferred."


def run_id_for(event_id: str) -> str:
    return uuid.uuid5(_RUN_NAMESPACE, event_id).hex


def _encode(record: st.RunRecord, owner: str) -> bytes:
    return json.dumps(
        {
            "run_id": record.run_id,
            "event_id": record.event_id,
            "correlation_id": record.correlation_id,
            "state": record.state,
            "description": record.description,
            "trigger": base64.b64encode(record.trigger).decode(),
            "context": record.context,
            "error": record.error,
            "started_at": record.started_at,
            "updated_at": record.updated_at,
            "owner": owner,
            "steps": [
                [
                    s.idx,
                    s.step_id,
                    s.capability,
                    s.required,
                    s.state,
                    s.module,
                    s.detail,
                    s.attempts,
                    s.idempotency_key,
                ]
                for s in record.steps
            ],
        }
    ).encode()


def _decode(value: bytes) -> tuple[st.RunRecord, str]:
    raw = json.loads(value)
    record = st.RunRecord(
        run_id=raw["run_id"],
        event_id=raw["event_id"],
        correlation_id=raw["correlation_id"],
        state=raw["state"],
        description=raw["description"],
        trigger=base64.b64decode(raw["trigger"]),
        context=raw["context"],
        started_at=raw["started_at"],
        updated_at=raw["updated_at"],
        error=raw["error"],
        steps=[st.StepRecord(*step) for step in raw["steps"]],
    )
    return record, str(raw["owner"])


def _deferred_key(owner: str, run_id: str) -> str:
    return f"{_DEFERRED}{key_token(owner)}.{run_id}"


def _deferred_steps(record: st.RunRecord) -> list[list[Any]]:
    """The run's deferred steps as the index holds them: [index, capability] each."""
    return [[s.idx, s.capability] for s in record.steps if s.state == st.STEP_DEFERRED]


def _live(record: st.RunRecord) -> bool:
    """Still needs a router: running, or a deferred step waiting for its module."""
    return record.state == st.RUN_RUNNING or any(
        step.state == st.STEP_DEFERRED for step in record.steps
    )


class KvRunStore(KvBucketStore):
    """Runs in a JetStream KV bucket, shared by the routers connected to the same NATS."""

    what = "the run store"

    def __init__(
        self,
        servers: Sequence[str],
        *,
        bucket: str = DEFAULT_BUCKET,
        replicas: int = 1,
        lease_s: float = 10.0,
        owner: str | None = None,
    ) -> None:
        super().__init__(servers, bucket=bucket, replicas=replicas, lease_s=lease_s, owner=owner)
        self.takeover_interval_s: float | None = lease_s / 2
        self._heartbeat: asyncio.Task[None] | None = None
        # owner -> (lease revision, when this router first saw that revision): a lease is
        # stale once its revision has stood still for lease_s on this router's clock.
        self._seen: dict[str, tuple[int, float]] = {}
        # Set when this router could not reach NATS (a failed or slow renewal or listing):
        # time it could not watch the leases does not count towards staleness, or a NATS
        # outage longer than a lease would make every router take over every other's runs.
        self._blind = False
        # Runs are read only when a lease went stale or went away, and once at start (for
        # runs of routers that were gone before this one came): leases alone otherwise.
        self._scanned = False
        # Run ids the last deferred() found in this router's index: a read of one of them
        # that finds it not deferred here drops its entry.
        self._indexed: set[str] = set()

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        await self._open_bucket(
            f"soulspot-pipeline-{self.owner}", "SoulSpot pipeline runs and router leases"
        )
        await self._renew()
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._heartbeat_forever(), name="pipeline-lease"
        )

    async def close(self) -> None:
        """Stop renewing the lease, give it up and disconnect, each step within
        `close_step_s`: with NATS out of reach the lease goes stale instead (lease_s)."""
        task, self._heartbeat = self._heartbeat, None
        await self._end_loop(task, "the lease renewal")
        if self._kv is not None:
            # Gone at once rather than stale after lease_s: another router takes the runs now
            # (and indexes their deferred steps as its own; this router's index goes).
            await self._close_step("giving the lease up", self._kv.delete(_ROUTERS + self.owner))
            await self._close_step("dropping the index", self._purge_index(self.owner))
        await self._disconnect()

    @property
    def kv(self) -> KeyValue:
        """The open bucket, for the pipeline state kept beside the runs (album progress)."""
        return self._require()

    async def _renew(self) -> None:
        await self._require().put(_ROUTERS + self.owner, str(time.time()).encode())

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            began = time.monotonic()
            try:
                await self._renew()
            except Exception as err:  # NATS away: keep trying (runs may move)
                self._blind = True
                _log.warning("could not renew the pipeline lease: %s", err)
            else:
                if time.monotonic() - began > self.lease_s / 3:
                    self._blind = True  # NATS stalled meanwhile: others could not renew

    # --- runs ------------------------------------------------------------------------------

    async def create_run(
        self,
        *,
        event_id: str,
        correlation_id: str,
        description: str,
        trigger: bytes,
        context: dict[str, Any],
        steps: Sequence[st.NewStep],
    ) -> tuple[str, bool]:
        """(run_id, created): created only for the one router whose KV create won."""
        run_id = run_id_for(event_id)
        now = time.time()
        record = st.RunRecord(
            run_id=run_id,
            event_id=event_id,
            correlation_id=correlation_id,
            state=st.RUN_RUNNING,
            description=description,
            trigger=trigger,
            context={**context, "run_id": run_id},
            started_at=now,
            updated_at=now,
            steps=[
                st.StepRecord(
                    idx,
                    s.step_id,
                    s.capability,
                    s.required,
                    st.STEP_PENDING,
                    idempotency_key=f"{run_id}:{s.step_id}",
                )
                for idx, s in enumerate(steps)
            ],
        )
        try:
            await self._require().create(_RUNS + run_id, _encode(record, self.owner))
        except js_errors.KeyWrongLastSequenceError:
            return run_id, False
        return run_id, True

    async def _entry(self, run_id: str) -> tuple[st.RunRecord, str, int] | None:
        try:
            entry = await self._require().get(_RUNS + run_id)
        except js_errors.KeyNotFoundError:
            return None
        assert entry.value is not None
        assert entry.revision is not None
        record, owner = _decode(entry.value)
        return record, owner, entry.revision

    async def get(self, run_id: str) -> st.RunRecord | None:
        found = await self._entry(run_id)
        if run_id in self._indexed and (
            found is None or found[1] != self.owner or not _deferred_steps(found[0])
        ):
            # This router's index named a run it no longer has deferred here.
            self._indexed.discard(run_id)
            with contextlib.suppress(Exception):
                await self._drop_entry(run_id)
        return found[0] if found is not None else None

    async def _drop_entry(self, run_id: str) -> None:
        """Drop this router's index entry for a run it does not have deferred, unless the
        entry is written again meanwhile: the entry is read before the run and deleted on
        that revision, so an entry put after the run became deferred again stays."""
        kv = self._require()
        key = _deferred_key(self.owner, run_id)
        try:
            entry = await kv.get(key)
        except js_errors.KeyNotFoundError:
            return
        found = await self._entry(run_id)
        if found is not None and found[1] == self.owner and _deferred_steps(found[0]):
            return
        with contextlib.suppress(js_errors.APIError):  # rewritten meanwhile: it stays
            await kv.delete(key, last=entry.revision)

    async def get_by_event(self, event_id: str) -> st.RunRecord | None:
        return await self.get(run_id_for(event_id))

    async def _keys(self, prefix: str) -> list[str]:
        """Every live key under `prefix` (which ends in a dot), values not read."""
        return list(await self._listing(prefix + ">", values=False))

    async def _all(self) -> list[tuple[st.RunRecord, str, int]]:
        found = []
        for key in await self._keys(_RUNS):
            entry = await self._entry(key.removeprefix(_RUNS))
            if entry is not None:
                found.append(entry)
        return found

    async def list_runs(self, limit: int = 50, state: int | None = None) -> list[st.RunRecord]:
        records = [r for r, _owner, _rev in await self._all() if state is None or r.state == state]
        records.sort(key=lambda r: r.started_at, reverse=True)
        return records[:limit]

    async def resumable(self) -> list[st.RunRecord]:
        """Runs still owned by this owner name (only when it is given explicitly and reused);
        a dead router's runs come through take_over."""
        return [
            r
            for r, owner, _rev in await self._all()
            if owner == self.owner and r.state == st.RUN_RUNNING
        ]

    async def deferred(self) -> list[tuple[str, int, str]]:
        """Deferred steps of this router's runs, oldest run first: one listing of its index,
        not a read of every run. (An entry may be a moment stale: the engine reads the run
        before it runs the step, and that read drops a wrong entry.)"""
        prefix = f"{_DEFERRED}{key_token(self.owner)}."
        entries = []
        for key, value in (await self._listing(prefix + "*")).items():
            raw = json.loads(value)
            entries.append((float(raw["started_at"]), key.removeprefix(prefix), raw["steps"]))
        entries.sort()
        self._indexed = {run_id for _at, run_id, _steps in entries}
        return [
            (run_id, int(idx), str(capability))
            for _at, run_id, steps in entries
            for idx, capability in steps
        ]

    async def _index(self, record: st.RunRecord, owner: str, before: list[list[Any]]) -> None:
        """Bring `owner`'s index entry for the run in line with the run just written, whose
        deferred steps were `before` (no write when they did not change)."""
        steps = _deferred_steps(record)
        if steps == before:
            return
        key = _deferred_key(owner, record.run_id)
        if steps:
            value = {"started_at": record.started_at, "steps": steps}
            await self._require().put(key, json.dumps(value).encode())
        else:
            await self._require().delete(key)

    async def _purge_index(self, owner: str) -> None:
        """Forget every index entry of `owner` (a router gone or dead), in one request."""
        assert self._nc is not None
        await purge_keys(self._nc, self.bucket, f"{_DEFERRED}{key_token(owner)}.")

    async def take_over(self) -> list[str]:
        kv = self._require()
        leases: dict[str, int] = {}
        try:
            for key in await self._keys(_ROUTERS):
                with contextlib.suppress(js_errors.KeyNotFoundError):
                    entry = await kv.get(key)
                    assert entry.revision is not None
                    leases[key.removeprefix(_ROUTERS)] = entry.revision
        except Exception:
            self._blind = True
            raise
        now = time.monotonic()
        if self._blind:
            # Back in sight after an outage: every lease's stand-still counts from now.
            self._blind = False
            self._seen = {owner: (revision, now) for owner, (revision, _) in self._seen.items()}
        stale: set[str] = set()
        for owner, revision in leases.items():
            seen = self._seen.get(owner)
            if seen is None or seen[0] != revision:
                self._seen[owner] = (revision, now)
            elif now - seen[1] >= self.lease_s:
                stale.add(owner)
        gone = [owner for owner in self._seen if owner not in leases]
        if self._scanned and not stale and not gone:
            return []
        first_scan = not self._scanned
        taken: list[str] = []
        try:
            for record, owner, revision in await self._all():
                if owner == self.owner and first_scan:
                    # A router restarted under its old owner name: its index as its runs say.
                    await self._index(record, owner, [])
                if owner == self.owner or not _live(record):
                    continue
                if owner not in stale and (owner in leases or await self._has_lease(owner)):
                    continue
                try:
                    await kv.update(
                        _RUNS + record.run_id, _encode(record, self.owner), last=revision
                    )
                except js_errors.KeyWrongLastSequenceError:
                    continue  # another router took it first, or its owner just wrote
                taken.append(record.run_id)
                _log.warning(
                    "took over pipeline run %s from router %s, whose lease went stale",
                    record.run_id,
                    owner,
                    extra={"run_id": record.run_id, "correlation_id": record.correlation_id},
                )
                await self._index(record, self.owner, [])
        except Exception:
            # NATS out of reach mid-scan (a listing that still failed through a failover): the
            # first scan, the gone and the stale leases stay to do at the next round; the runs
            # already taken are this router's now, and go to the caller to resume.
            if not taken:
                raise
            _log.warning("looking for pipeline runs to take over stopped short", exc_info=True)
            return taken
        self._scanned = True
        for owner in gone:
            del self._seen[owner]
        for owner in stale:
            # Forget the dead lease, so it does not pile up; a router that only stalled
            # writes it again and finds its runs gone (LeaseLost).
            with contextlib.suppress(Exception):
                await kv.delete(_ROUTERS + owner, last=leases[owner])
            # Its deferred steps are indexed again by the routers that took its runs.
            with contextlib.suppress(Exception):
                await self._purge_index(owner)
            self._seen.pop(owner, None)
        return taken

    async def _has_lease(self, owner: str) -> bool:
        """Asked again just before taking a run whose owner had no lease in the listing: a
        router that started after the listing has one by now."""
        try:
            await self._require().get(_ROUTERS + owner)
        except js_errors.KeyNotFoundError:
            return False
        return True

    async def _mutate(self, run_id: str, change: Callable[[st.RunRecord], _T]) -> _T:
        """Read, change and compare-and-set the run; only while this router owns it."""
        kv = self._require()
        while True:
            found = await self._entry(run_id)
            if found is None:
                raise st.LeaseLost(run_id, "")
            record, owner, revision = found
            if owner != self.owner:
                with contextlib.suppress(Exception):
                    # Indexed while this router stalled and the run moved: not ours now.
                    await self._drop_entry(run_id)
                raise st.LeaseLost(run_id, owner)
            before = _deferred_steps(record)
            result = change(record)
            record.updated_at = time.time()
            try:
                await kv.update(_RUNS + run_id, _encode(record, owner), last=revision)
            except js_errors.KeyWrongLastSequenceError:
                continue  # written meanwhile (by this router or a takeover): read again
            await self._index(record, owner, before)
            return result

    async def step_started(self, run_id: str, idx: int, *, state: int = st.STEP_RUNNING) -> int:
        def change(record: st.RunRecord) -> int:
            step = record.steps[idx]
            step.state = state
            step.attempts += 1
            return step.attempts

        return await self._mutate(run_id, change)

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
        def change(record: st.RunRecord) -> None:
            step = record.steps[idx]
            if result is not None:
                record.context.setdefault("steps", {})[step.step_id] = result
            step.state, step.module, step.detail = state, module, detail

        await self._mutate(run_id, change)

    async def set_state(self, run_id: str, state: int, error: str = "") -> None:
        def change(record: st.RunRecord) -> None:
            record.state, record.error = state, error

        await self._mutate(run_id, change)
