"""The post-download pipeline: download.completed in, track.ready out.

It lives in the router process but uses the mesh only through public interfaces: the event
bus's Subscribe/Publish RPCs, the capability proxy and the health service, all on a channel
to the router's own address. A run is recorded durably before its event is acked, then runs
in the background:

0. the downloaded file must be a regular file inside the downloads folders (no symlink on the
   way, never the state folder); a run for any other path fails with the reason, untouched;
1. download.completed.for_source for the module that asked for the download;
2. the configured steps in order, each request mapped from the download and earlier results;
   a step with no healthy module is deferred (optional) or fails the run (required);
3. track.ready.

Deferred steps run again when the router's health service says their capability service is
SERVING (a Watch per service, and a periodic sweep as a safety net).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from router.pipeline import store as st
from router.pipeline.albums import AlbumTracker, KvAlbumState
from router.pipeline.calls import CapabilityCaller, HealthView, is_unavailable
from router.pipeline.config import (
    PipelineConfig,
    StepConfig,
    check_against,
    load_pipeline_config,
)
from router.pipeline.kv_store import KvRunStore
from router.pipeline.mapping import evaluate
from router.pipeline.publish import RunPublisher, derived_event_id
from router.routing.capabilities import Catalog, load_catalog
from services.kit.events.client import EventHandlers, Subscriber
from services.kit.rpc.channel import open_channel
from services.kit.rpc.context import bind, parse_traceparent
from services.kit.rpc.errors import (
    DeadlineExceeded,
    InvalidArgument,
    MeshError,
    NotFound,
    abort_with,
    is_transient,
)
from services.kit.security.confinement import confined_file
from services.kit.support.tasks import cancel_within
from soulspot.events.v1 import download_pb2 as download_events_pb2
from soulspot.events.v1 import envelope_pb2
from soulspot.events.v1 import pipeline_pb2 as pipeline_events_pb2
from soulspot.events.v1 import track_pb2 as track_events_pb2
from soulspot.router.v1 import pipeline_runs_pb2, pipeline_runs_pb2_grpc, router_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import grpc

_log = logging.getLogger("router.pipeline")
SERVICE_NAME = pipeline_runs_pb2.DESCRIPTOR.services_by_name["PipelineRunService"].full_name

CONSUMER = "pipeline"
TRIGGER_EVENT = "download.completed"
DB_FILE = "pipeline.sqlite3"
# How long stopping waits for each task to end: about one NATS request (nats-py's JetStream
# timeout), the longest a run's or loop's store call should take to give in.
STOP_TASK_S = 5.0


async def _end_all(tasks: Iterable[asyncio.Task[Any]], what: str) -> None:
    """Cancel the tasks and wait for them at once, each within STOP_TASK_S and cancelled
    again while it runs on: one in a NATS request may lose a cancellation (cancel_within).
    What they end with is swallowed (work being given up); one that outlasts the bound is
    logged and left to unwind."""
    pending = list(tasks)
    ended = await asyncio.gather(*(cancel_within(task, STOP_TASK_S) for task in pending))
    if not all(ended):
        _log.warning(
            "stopping the pipeline: %d %s(s) did not end within %gs",
            ended.count(False),
            what,
            STOP_TASK_S,
        )


def _describe(track: dict[str, Any]) -> str:
    artist, title = track.get("artist", ""), track.get("title", "")
    return f"{artist} - {title}" if artist and title else title or artist


class Pipeline(pipeline_runs_pb2_grpc.PipelineRunServiceServicer):
    """Runs the post-download pipeline. `start()` after the router serves; `stop()` before it
    stops. It serves PipelineRunService (ListPipelineRuns, GetPipelineRun), and
    the router's status includes `in_flight()`."""

    def __init__(
        self,
        router_address: str | None,
        state_dir: Path | str,
        *,
        config_file: Path | str | None = None,
        config: PipelineConfig | None = None,
        catalog: Catalog | None = None,
        consumer: str = CONSUMER,
        subscribe: bool = True,
        download_dirs: Sequence[Path] | None = None,
        store: st.RunStore | None = None,
    ) -> None:
        """`download_dirs`: the folders a download.completed's file must lie in (the router's
        `download_dirs` setting); None leaves paths unchecked, for callers whose steps are
        served by stand-ins that never touch a file. `store`: where runs live (default
        SQLite in the state dir; routers sharing NATS share a KvRunStore)."""
        self._address = router_address
        self._state_dir = Path(state_dir)
        self.download_dirs = None if download_dirs is None else list(download_dirs)
        self._catalog = catalog or load_catalog()
        self.config = config or load_pipeline_config(config_file)
        check_against(self.config, self._catalog)
        self._steps = {step.step_id: step for step in self.config.steps}
        self.store: st.RunStore = store or st.SqliteRunStore(Path(state_dir) / DB_FILE)
        self._consumer = consumer
        self._subscribe = subscribe
        self._channel: grpc.aio.Channel | None = None
        self._caller: CapabilityCaller | None = None
        self._health: HealthView | None = None
        self._publisher: RunPublisher | None = None
        self._subscription: Subscriber | None = None
        self.albums: AlbumTracker | None = None
        self._slots = asyncio.Semaphore(self.config.max_concurrent_runs)
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._deferred_busy: set[tuple[str, int]] = set()
        self._in_flight: dict[str, router_pb2.InFlightWork] = {}
        self._started_at = 0.0
        self._stopped = False

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, router_address: str | None = None) -> None:
        """Open the store, resume unfinished runs, subscribe, watch deferred steps.

        Call it once the router serves; `router_address` (the bound address, when the router
        was started on port 0) overrides the one given at construction.
        """
        self._address = router_address or self._address
        if not self._address:
            raise ValueError("the pipeline needs the router's address")
        self._started_at = time.monotonic()
        await self.store.open()
        self._channel = open_channel(self._address)
        self._caller = CapabilityCaller(self._channel, self._catalog)
        self._health = HealthView(self._channel)
        self._publisher = RunPublisher(self._channel)
        for record in await self.store.resumable():
            _log.info(
                "resuming pipeline run %s (%s)",
                record.run_id,
                record.description,
                extra={"run_id": record.run_id, "correlation_id": record.correlation_id},
            )
            self._launch(record.run_id)
        if self._subscribe:
            handlers = EventHandlers()
            handlers.add(TRIGGER_EVENT, self.handle_download_completed)
            self._subscription = Subscriber(
                self._channel,
                consumer=self._consumer,
                handlers=handlers,
                # A first start also takes download.completed events stored before it.
                start=router_pb2.START_POSITION_EARLIEST,
                max_in_flight=max(16, self.config.max_concurrent_runs * 2),
                instance="router-pipeline",
            )
            await self._subscription.start()
            # album.ready after the last track's run: a consumer of its own, in log order.
            # Beside the runs: in their KV bucket when routers share them, so the router that
            # takes the album consumer over goes on with the albums in progress.
            album_state = (
                KvAlbumState(self.store.kv) if isinstance(self.store, KvRunStore) else None
            )
            self.albums = AlbumTracker(
                self._channel,
                self._publisher,
                self._state_dir,
                consumer=f"{self._consumer}-albums",
                state=album_state,
            )
            await self.albums.start()
        self._spawn(self._sweep_forever())
        self._spawn(self._quiesce_on_shutdown())
        if self.store.takeover_interval_s is not None:
            self._spawn(self._take_over_forever(self.store.takeover_interval_s))

    async def wait_subscribed(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        if self._subscription is not None:
            await self._subscription.wait_connected(timeout)

    async def stop(self) -> None:
        """Stop working; unfinished runs stay RUNNING in the store and resume at next start.
        Every task ends within STOP_TASK_S, and the store bounds its own close: a router whose
        NATS is out of reach, or a loop that lost its cancellation, still stops."""
        await self._quiesce()
        await _end_all(self._background, "background task")
        if self._channel is not None:
            await self._channel.close()
        await self.store.close()

    async def _quiesce(self) -> None:
        """Stop taking events and running steps (runs stay RUNNING and resume later)."""
        self._stopped = True
        if self._subscription is not None:
            await self._subscription.stop()
        if self.albums is not None:
            await self.albums.stop()
        await _end_all(self._runs.values(), "run")
        await _end_all(self._watchers.values(), "deferred-step watch")

    async def _quiesce_on_shutdown(self) -> None:
        """When the router starts its graceful shutdown (its health turns NOT_SERVING), let go
        of the router at once: the pipeline's own Subscribe stream and step calls would
        otherwise hold the server's grace period open, however the router orders its stop."""
        assert self._health is not None
        seen_serving = False
        async for serving in self._health.reported(""):
            if serving:
                seen_serving = True
            elif seen_serving:
                _log.info("router shutting down: pipeline stops taking work")
                await self._quiesce()
                return

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- queries (PipelineRunService) ------------------------------------------------------

    async def list_runs(self, limit: int = 0) -> list[router_pb2.PipelineRun]:
        return [r.to_proto() for r in await self.store.list_runs(limit or 50)]

    async def get_run(self, run_id: str) -> router_pb2.PipelineRun | None:
        record = await self.store.get(run_id)
        return record.to_proto() if record is not None else None

    async def ListPipelineRuns(
        self, request: router_pb2.ListPipelineRunsRequest, context: Any
    ) -> router_pb2.ListPipelineRunsResponse:
        return router_pb2.ListPipelineRunsResponse(runs=await self.list_runs(request.limit))

    async def GetPipelineRun(
        self, request: router_pb2.GetPipelineRunRequest, context: Any
    ) -> router_pb2.GetPipelineRunResponse:
        run = await self.get_run(request.run_id)
        if run is None:
            await abort_with(context, NotFound(f"no pipeline run {request.run_id!r}"))
        return router_pb2.GetPipelineRunResponse(run=run)

    def fill_status(self, response: router_pb2.GetStatusResponse) -> None:
        """Add runs in flight to the router's status."""
        response.in_flight.extend(self.in_flight())

    def in_flight(self) -> list[router_pb2.InFlightWork]:
        """Runs executing now, for the router's status."""
        copies = []
        for work in self._in_flight.values():
            copy = router_pb2.InFlightWork()
            copy.CopyFrom(work)
            copies.append(copy)
        return copies

    # --- intake ----------------------------------------------------------------------------

    async def handle_download_completed(
        self,
        payload: download_events_pb2.DownloadCompleted,
        envelope: envelope_pb2.EventEnvelope,
    ) -> str:
        """Record a run for this event (once per event_id) and start it; returns the run id."""
        as_dict = json_format.MessageToDict(payload, preserving_proto_field_name=True)
        context: dict[str, Any] = {
            "download_id": payload.download_id,
            "source": payload.source,
            "requested_by": payload.requested_by,
            "track": as_dict.get("track", {}),
            "file": as_dict.get("file", {}),
            "event_id": envelope.event_id,
            "correlation_id": envelope.correlation_id,
            "steps": {},
        }
        run_id, created = await self.store.create_run(
            event_id=envelope.event_id,
            correlation_id=envelope.correlation_id,
            description=_describe(context["track"]),
            trigger=envelope.SerializeToString(),
            context=context,
            steps=[st.NewStep(s.step_id, s.capability, s.required) for s in self.config.steps],
        )
        if created:
            _log.info(
                "pipeline run %s started for download %s",
                run_id,
                payload.download_id,
                extra={"run_id": run_id, "correlation_id": envelope.correlation_id},
            )
            self._launch(run_id)
        return run_id

    def _launch(self, run_id: str) -> None:
        if self._stopped or run_id in self._runs:
            return
        task = asyncio.ensure_future(self._execute(run_id))
        self._runs[run_id] = task
        task.add_done_callback(lambda _t: self._runs.pop(run_id, None))

    async def wait_idle(self) -> None:
        """Until no run is executing (tests, benchmarks)."""
        while self._runs:
            await asyncio.gather(*list(self._runs.values()), return_exceptions=True)

    # --- execution -------------------------------------------------------------------------

    async def _execute(self, run_id: str) -> None:
        async with self._slots:
            record = await self.store.get(run_id)
            if record is None or record.state != st.RUN_RUNNING:
                return
            trigger = envelope_pb2.EventEnvelope.FromString(record.trigger)
            parent = parse_traceparent(trigger.traceparent)
            work = router_pb2.InFlightWork(
                kind="pipeline_run", id=run_id, description=record.description
            )
            work.started_at.FromSeconds(int(record.started_at))
            self._in_flight[run_id] = work
            try:
                with bind(
                    trigger.correlation_id or None, parent.child() if parent is not None else None
                ):
                    await self._run_steps(record, trigger, work)
            except asyncio.CancelledError:
                raise
            except st.LeaseLost as lost:
                # This router looked dead to another, which resumes the run from its record.
                _log.warning("pipeline run %s stopped here: %s", run_id, lost)
            except Exception:
                # A bug or a publish that kept failing: the run stays RUNNING and resumes at the
                # next start instead of being lost.
                _log.exception("pipeline run %s stopped unexpectedly", run_id)
            finally:
                self._in_flight.pop(run_id, None)

    async def _run_steps(
        self,
        record: st.RunRecord,
        trigger: envelope_pb2.EventEnvelope,
        work: router_pb2.InFlightWork,
    ) -> None:
        assert self._publisher is not None
        run_id, context = record.run_id, record.context
        completed = download_events_pb2.DownloadCompleted()
        trigger.payload.Unpack(completed)
        refused = self._refusal(record, completed)
        if refused is not None:
            first = self._steps.get(record.steps[0].step_id) if record.steps else None
            if first is not None:
                await self.store.step_finished(run_id, 0, st.STEP_FAILED, detail=refused)
                await self._fail(record, trigger, completed, first, refused)
                return
        await self._publisher.publish(
            download_events_pb2.DownloadCompletedForSource(
                download_id=completed.download_id,
                track=completed.track,
                file=completed.file,
                target_module=completed.requested_by,
                pipeline_run_id=run_id,
            ),
            event_id=derived_event_id(run_id, "for_source"),
            cause=trigger,
            subject=completed.download_id,
        )
        total = max(1, len(record.steps))
        for step in record.steps:
            work.percent = 100.0 * step.idx / total
            work.description = f"{record.description}: {step.capability}"
            if step.state not in (st.STEP_PENDING, st.STEP_RUNNING):
                continue
            config = self._steps.get(step.step_id)
            if config is None:
                await self.store.step_finished(
                    run_id, step.idx, st.STEP_SKIPPED, detail="no longer in the pipeline file"
                )
                continue
            state, detail = await self._run_step(record, step, config, context, trigger)
            if state == st.STEP_FAILED and config.required:
                await self._fail(record, trigger, completed, config, detail)
                return
        await self._ready(record, trigger, completed)

    def _refusal(
        self, record: st.RunRecord, completed: download_events_pb2.DownloadCompleted
    ) -> str | None:
        """Why the run must not act on the downloaded file, or None when it may.

        Asked before the first step only: once a step ran, the import may already have moved
        the file out of the downloads folders, and a resumed run must carry on."""
        if self.download_dirs is None or any(
            step.state != st.STEP_PENDING for step in record.steps
        ):
            return None
        try:
            confined_file(
                completed.file.path,
                self.download_dirs,
                field="file.path",
                forbidden=[self._state_dir],
            )
        except InvalidArgument as err:
            return f"{err.code.name}: {err.message}"
        return None

    async def _run_step(
        self,
        record: st.RunRecord,
        step: st.StepRecord,
        config: StepConfig,
        context: dict[str, Any],
        trigger: envelope_pb2.EventEnvelope,
        *,
        deferred: bool = False,
    ) -> tuple[int, str]:
        """Run one step to an outcome; returns (step state, detail). Updates `context`."""
        assert self._caller is not None
        assert self._health is not None
        run_id = record.run_id
        spec = self._catalog.by_capability[config.capability]
        guarded = not spec.idempotent and config.verify is not None
        service = spec.service
        wait_budget = 0.0 if deferred else max(config.wait_s, self._grace_left())
        if guarded and step.state == st.STEP_RUNNING:
            # Started before a crash: it may have taken effect. Ask before doing it again,
            # waiting (within the step's budget) for a module that can answer.
            assert config.verify is not None
            verify_service = self._catalog.by_capability[config.verify.capability].service
            if wait_budget > 0:
                await self._health.wait_serving(verify_service, wait_budget)
            done = await self._verify(record, step, config, context)
            if done is not None:
                return done
        attempts = 0
        last: MeshError | None = None
        while attempts < config.attempts:
            attempts += 1
            await self.store.step_started(
                run_id, step.idx, state=st.STEP_DEFERRED if deferred else st.STEP_RUNNING
            )
            request = evaluate(config.request, context)
            try:
                response, module = await self._caller.call(
                    config.capability, request, timeout=config.timeout_s
                )
            except MeshError as err:
                last = err
                if guarded and isinstance(err, (DeadlineExceeded, NotFound)):
                    # It may have happened (deadline) or happened in an earlier attempt and
                    # moved the file away (not found): ask before deciding.
                    done = await self._verify(record, step, config, context)
                    if done is not None:
                        return done
                if is_unavailable(err) and wait_budget > 0:
                    started = time.monotonic()
                    came_back = await self._health.wait_serving(service, wait_budget)
                    wait_budget -= time.monotonic() - started
                    if came_back:
                        attempts -= 1  # waiting for a module is not a failed attempt
                        continue
                    break
                if is_unavailable(err) and not config.required:
                    # The proxy already tried every provider; a deferred step runs again as
                    # soon as one is healthy, so retrying here would only delay the run.
                    break
                if is_transient(err) and attempts < config.attempts:
                    await asyncio.sleep(0.1 * 2**attempts * (0.5 + random.random()))
                    continue
                break
            context.setdefault("steps", {})[config.step_id] = response
            detail = "ran after its module came back" if deferred else ""
            await self.store.step_finished(
                run_id, step.idx, st.STEP_SUCCEEDED, module=module, detail=detail, result=response
            )
            return st.STEP_SUCCEEDED, detail
        assert last is not None
        return await self._not_done(record, step, config, trigger, last, deferred=deferred)

    async def _not_done(
        self,
        record: st.RunRecord,
        step: st.StepRecord,
        config: StepConfig,
        trigger: envelope_pb2.EventEnvelope,
        err: MeshError,
        *,
        deferred: bool,
    ) -> tuple[int, str]:
        assert self._publisher is not None
        detail = f"{err.code.name}: {err.message}"
        if config.required:
            await self.store.step_finished(record.run_id, step.idx, st.STEP_FAILED, detail=detail)
            return st.STEP_FAILED, detail
        state = st.STEP_DEFERRED if is_unavailable(err) else st.STEP_SKIPPED
        await self.store.step_finished(record.run_id, step.idx, state, detail=detail)
        if deferred:
            return state, detail  # already announced when it was first deferred
        _log.warning(
            "pipeline step %s skipped%s: %s",
            config.capability,
            " (runs later, when a module serves it)" if state == st.STEP_DEFERRED else "",
            err.message,
            extra={
                "run_id": record.run_id,
                "module_name": "router",
                "operation": config.capability,
                "status": err.code.name,
                "impact": f"{record.description}: {config.capability} did not run",
                "action": "start a module that serves " + config.capability,
            },
        )
        await self._publisher.publish(
            pipeline_events_pb2.PipelineStepSkipped(
                pipeline_run_id=record.run_id,
                capability=config.capability,
                reason=detail,
                deferred=state == st.STEP_DEFERRED,
            ),
            event_id=derived_event_id(record.run_id, "skipped", config.step_id),
            cause=trigger,
            subject=record.run_id,
        )
        if state == st.STEP_DEFERRED:
            self._watch(self._catalog.by_capability[config.capability].service)
        return state, detail

    async def _verify(
        self,
        record: st.RunRecord,
        step: st.StepRecord,
        config: StepConfig,
        context: dict[str, Any],
    ) -> tuple[int, str] | None:
        """(SUCCEEDED, detail) when the step already took effect; None when it did not or
        when that cannot be known now (then the step runs, relying on the module's own
        duplicate detection)."""
        assert self._caller is not None
        assert config.verify is not None
        verify = config.verify
        try:
            response, module = await self._caller.call(
                verify.capability,
                evaluate(verify.request, context),
                timeout=config.timeout_s,
            )
        except MeshError as err:
            _log.warning(
                "could not verify whether %s already ran: %s", config.capability, err.message
            )
            return None
        scope = {**context, "verify": response}
        if not evaluate(verify.done_if, scope):
            return None
        result = evaluate(verify.result, scope)
        context.setdefault("steps", {})[config.step_id] = result
        detail = f"already done (confirmed by {verify.capability})"
        await self.store.step_finished(
            record.run_id, step.idx, st.STEP_SUCCEEDED, module=module, detail=detail, result=result
        )
        _log.info(
            "pipeline step %s had already taken effect; not repeated",
            config.capability,
            extra={"run_id": record.run_id},
        )
        return st.STEP_SUCCEEDED, detail

    async def _fail(
        self,
        record: st.RunRecord,
        trigger: envelope_pb2.EventEnvelope,
        completed: download_events_pb2.DownloadCompleted,
        config: StepConfig,
        detail: str,
    ) -> None:
        assert self._publisher is not None
        _log.error(
            "pipeline run %s failed at %s: %s",
            record.run_id,
            config.capability,
            detail,
            extra={"run_id": record.run_id, "operation": config.capability},
        )
        await self._publisher.publish(
            pipeline_events_pb2.PipelineRunFailed(
                pipeline_run_id=record.run_id,
                capability=config.capability,
                reason=detail,
                download_id=completed.download_id,
            ),
            event_id=derived_event_id(record.run_id, "failed"),
            cause=trigger,
            subject=completed.download_id,
        )
        await self.store.set_state(record.run_id, st.RUN_FAILED, detail)

    async def _ready(
        self,
        record: st.RunRecord,
        trigger: envelope_pb2.EventEnvelope,
        completed: download_events_pb2.DownloadCompleted,
    ) -> None:
        assert self._publisher is not None
        fresh = await self.store.get(record.run_id)
        assert fresh is not None
        ready = evaluate(self.config.ready, fresh.context)
        event = track_events_pb2.TrackReady(
            pipeline_run_id=record.run_id,
            download_id=completed.download_id,
            skipped_steps=[
                s.capability for s in fresh.steps if s.state in (st.STEP_DEFERRED, st.STEP_SKIPPED)
            ],
        )
        json_format.ParseDict(
            {k: v for k, v in ready.items() if k in ("track", "file")},
            event,
            ignore_unknown_fields=True,
        )
        await self._publisher.publish(
            event,
            event_id=derived_event_id(record.run_id, "ready"),
            cause=trigger,
            subject=completed.download_id,
        )
        await self.store.set_state(record.run_id, st.RUN_COMPLETED)
        _log.info(
            "track ready: %s at %s",
            record.description,
            event.file.path,
            extra={"run_id": record.run_id, "skipped_steps": list(event.skipped_steps)},
        )

    def _grace_left(self) -> float:
        return max(0.0, self.config.startup_grace_s - (time.monotonic() - self._started_at))

    # --- deferred steps --------------------------------------------------------------------

    def _watch(self, service: str) -> None:
        """Watch the router's health for `service` until its deferred steps are done."""
        if self._stopped or service in self._watchers:
            return
        task = asyncio.ensure_future(self._watch_service(service))
        self._watchers[service] = task
        task.add_done_callback(lambda _t: self._watchers.pop(service, None))

    async def _watch_service(self, service: str) -> None:
        assert self._health is not None
        async for serving in self._health.watch(service):
            if not serving:
                continue
            try:
                remaining = await self.run_deferred(service)
            except Exception:
                # The store is out of reach: the next sweep watches the service again.
                _log.warning("could not run the deferred steps of %s", service, exc_info=True)
                return
            if remaining == 0:
                return

    async def _take_over_forever(self, interval_s: float) -> None:
        """Resume the runs of routers whose lease went stale (a shared store only)."""
        while True:
            await asyncio.sleep(interval_s)
            if self._stopped:
                return
            try:
                taken = await self.store.take_over()
            except Exception:  # the store is away: try again next round
                _log.warning("could not look for pipeline runs to take over", exc_info=True)
                continue
            for run_id in taken:
                self._launch(run_id)
            if taken:
                # Their deferred steps: watched now, else at the next sweep.
                await self._watch_deferred()

    async def _sweep_forever(self) -> None:
        while True:
            await self._watch_deferred()
            await asyncio.sleep(self.config.deferred_sweep_s)

    async def _watch_deferred(self) -> None:
        """Watch the services of the deferred steps; a store out of reach (a listing that
        still fails through a NATS failover) waits for the next round, not the end of the
        loop that asked."""
        try:
            deferred = await self.store.deferred()
        except Exception:
            _log.warning("could not list the deferred pipeline steps", exc_info=True)
            return
        for _run_id, _idx, capability in deferred:
            self._watch(self._catalog.by_capability[capability].service)

    async def run_deferred(self, service: str | None = None) -> int:
        """Try every deferred step (of `service`'s capabilities); returns how many remain."""
        remaining = 0
        for run_id, idx, capability in await self.store.deferred():
            if service is not None and self._catalog.by_capability[capability].service != service:
                continue
            if (run_id, idx) in self._deferred_busy:
                remaining += 1
                continue
            self._deferred_busy.add((run_id, idx))
            try:
                state = await self._run_deferred_step(run_id, idx)
            except st.LeaseLost as lost:
                _log.warning("deferred pipeline step left to another router: %s", lost)
                continue
            finally:
                self._deferred_busy.discard((run_id, idx))
            if state == st.STEP_DEFERRED:
                remaining += 1
        return remaining

    async def _run_deferred_step(self, run_id: str, idx: int) -> int:
        record = await self.store.get(run_id)
        if record is None:
            return st.STEP_SKIPPED
        step = record.steps[idx]
        config = self._steps.get(step.step_id)
        if step.state != st.STEP_DEFERRED:
            return step.state
        if config is None:
            await self.store.step_finished(
                run_id, idx, st.STEP_SKIPPED, detail="no longer in the pipeline file"
            )
            return st.STEP_SKIPPED
        trigger = envelope_pb2.EventEnvelope.FromString(record.trigger)
        parent = parse_traceparent(trigger.traceparent)
        with bind(trigger.correlation_id or None, parent.child() if parent is not None else None):
            state, _detail = await self._run_step(
                record, step, config, record.context, trigger, deferred=True
            )
        if state == st.STEP_SUCCEEDED:
            _log.info(
                "deferred pipeline step %s ran for %s",
                config.capability,
                record.description,
                extra={"run_id": run_id},
            )
        return state
