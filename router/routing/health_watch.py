"""Watches each module with grpc.health.v1 Watch, or Check polling where Watch is missing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2

from router.routing.registry import ACTIVE, INACTIVE

if TYPE_CHECKING:
    from router.routing.registry import ModuleEntry, Registry, Status
    from router.settings import RouterSection

log = logging.getLogger("soulspot.router.health")

_SERVING = health_pb2.HealthCheckResponse.SERVING
_CHECK = "/grpc.health.v1.Health/Check"
_WATCH = "/grpc.health.v1.Health/Watch"
_REQUEST = health_pb2.HealthCheckRequest(service="")


def _verdict(status: int) -> tuple[Status, str]:
    if status == _SERVING:
        return ACTIVE, "serving"
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    return INACTIVE, f"health reports {name}"


def _failure(err: grpc.aio.AioRpcError, what: str) -> str:
    return f"health {what} failed: {err.code().name}: {err.details() or ''}".rstrip(": ")


class HealthWatcher:
    """One background task per module, keeping its health in the registry current."""

    def __init__(self, registry: Registry, settings: RouterSection) -> None:
        self.registry = registry
        self.settings = settings
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def check_now(self, entry: ModuleEntry) -> None:
        """One Check, so a new module is active (or not) before its first call arrives."""
        if entry.channel is None:
            return
        # Raw multicallables: the health stub's published type stubs have no methods.
        check = entry.channel.unary_unary(
            _CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            response = await check(
                _REQUEST,
                timeout=self.settings.health_check_timeout_s,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as err:
            self.registry.set_health(entry, INACTIVE, _failure(err, "check"))
            return
        self.registry.set_health(entry, *_verdict(response.status))

    def watch(self, entry: ModuleEntry) -> None:
        old = self._tasks.pop(entry.name, None)
        if old is not None:
            old.cancel()
        task = asyncio.get_running_loop().create_task(self._run(entry), name=f"health:{entry.name}")
        self._tasks[entry.name] = task
        task.add_done_callback(lambda t: self._forget(entry.name, t))

    def stop_watching(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _current(self, entry: ModuleEntry) -> bool:
        if self.registry.get(entry.name) is not entry or entry.channel is None:
            return False
        # An announced module that hung up is gone until it registers again.
        return not entry.dynamic or entry.stream_open

    async def _run(self, entry: ModuleEntry) -> None:
        use_watch = True
        while self._current(entry):
            assert entry.channel is not None
            if not use_watch:
                await self.check_now(entry)
                await asyncio.sleep(self.settings.health_poll_interval_s)
                continue
            try:
                call = entry.channel.unary_stream(
                    _WATCH,
                    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                    response_deserializer=health_pb2.HealthCheckResponse.FromString,
                )(_REQUEST)
                async for response in call:
                    if not self._current(entry):
                        call.cancel()
                        return
                    self.registry.set_health(entry, *_verdict(response.status))
                if self._current(entry):
                    self.registry.set_health(entry, INACTIVE, "health watch ended")
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    log.info("module %s has no health Watch; polling Check", entry.name)
                    use_watch = False
                    continue
                if self._current(entry):
                    self.registry.set_health(entry, INACTIVE, _failure(err, "watch"))
            await asyncio.sleep(self.settings.health_retry_interval_s)
