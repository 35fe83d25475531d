"""Keeps a module registered with the router: the Register stream, reconnecting with the
kit's backoff, one warning while the router is away (not one per try)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import grpc
from google.protobuf import timestamp_pb2

from services.kit.rpc.channel import open_channel
from services.kit.support.backoff import Backoff, BackoffPolicy
from soulspot.router.v1 import registry_pb2_grpc, router_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

log = logging.getLogger("soulspot.registration")


class RouterRegistration:
    def __init__(
        self,
        router_address: str,
        announcement: router_pb2.ModuleAnnouncement,
        *,
        heartbeat_interval: float = 10.0,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        self.router_address = router_address
        self.announcement = announcement
        self.heartbeat_interval = heartbeat_interval
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.registered: router_pb2.Registered | None = None
        self._health = router_pb2.HealthReport(serving=True)
        # Wakes the request stream when the module's health changes between heartbeats.
        self._health_changed = asyncio.Event()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Whether the registration was accepted within `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    def report_health(self, serving: bool, reason: str = "") -> None:
        """Tell the router whether this module can serve and why not; sent at once when the
        stream is open, and again after every reconnect."""
        report = router_pb2.HealthReport(serving=serving, reason="" if serving else reason)
        if report != self._health:
            self._health = report
            self._health_changed.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"registration:{self.announcement.name}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected.clear()

    async def _requests(self) -> AsyncIterator[router_pb2.RegisterRequest]:
        yield router_pb2.RegisterRequest(announce=self.announcement)
        self._health_changed.clear()
        yield router_pb2.RegisterRequest(health=self._health)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_interval):
                    await self._health_changed.wait()
            if self._health_changed.is_set():
                self._health_changed.clear()
                yield router_pb2.RegisterRequest(health=self._health)
                continue
            now = timestamp_pb2.Timestamp()
            now.GetCurrentTime()
            yield router_pb2.RegisterRequest(heartbeat=router_pb2.Heartbeat(sent_at=now))

    async def _run(self) -> None:
        # Equal jitter, uniform(d/2, d): many modules restarting together do not reconnect in
        # step, and none retries sooner than half its wait.
        backoff = Backoff(
            BackoffPolicy(initial_s=self.initial_backoff, cap_s=self.max_backoff, jitter="equal")
        )
        async with open_channel(self.router_address, interceptors=()) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            while True:
                try:
                    async for response in stub.Register(self._requests()):
                        if response.WhichOneof("kind") == "registered":
                            self.registered = response.registered
                            self._connected.set()
                            backoff.reset()
                            self._on_connected()
                    reason = "the router closed the registration stream"
                except grpc.aio.AioRpcError as err:
                    reason = f"{err.code().name}: {err.details() or ''}"
                    if err.code() in (
                        grpc.StatusCode.INVALID_ARGUMENT,
                        grpc.StatusCode.ALREADY_EXISTS,
                    ):
                        # The router refused this module: retrying fast would not help.
                        log.error(
                            "router refused registration of %s: %s",
                            self.announcement.name,
                            reason,
                            extra={"module_name": self.announcement.name},
                        )
                        backoff.to_cap()
                self._connected.clear()
                self._on_lost(reason)
                await backoff.wait()

    def _on_connected(self) -> None:
        if self._warned:
            log.info(
                "router reachable again, %s registered",
                self.announcement.name,
                extra={"module_name": self.announcement.name, "router": self.router_address},
            )
        else:
            log.info(
                "registered %s with the router",
                self.announcement.name,
                extra={"module_name": self.announcement.name, "router": self.router_address},
            )
        self._warned = False

    def _on_lost(self, reason: str) -> None:
        if self._warned:
            return
        self._warned = True
        log.warning(
            "router unreachable, serving standalone",
            extra={
                "module_name": self.announcement.name,
                "router": self.router_address,
                "reason": reason,
            },
        )
