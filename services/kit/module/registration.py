"""Keeps a module registered with the router, or with every router when the address names
several (comma-separated): one Register stream per router, each reconnecting with the kit's
backoff, one warning while a router is away (not one per try). Each router then watches the
module's health itself, so any of them shows and routes the same mesh."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import grpc
from google.protobuf import timestamp_pb2

from services.kit.rpc.channel import open_channel
from services.kit.rpc.targets import split_addresses
from services.kit.support.backoff import Backoff, BackoffPolicy
from soulspot.router.v1 import registry_pb2_grpc, router_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

log = logging.getLogger("soulspot.registration")


class _RouterLink:
    """One router's side of the registration: its stream's state."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.connected = asyncio.Event()
        # Wakes this stream's requests when the module's health changes between heartbeats.
        self.health_changed = asyncio.Event()
        self.warned = False


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
        self.links = [_RouterLink(a) for a in split_addresses(router_address) or [router_address]]
        self.announcement = announcement
        self.heartbeat_interval = heartbeat_interval
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.registered: router_pb2.Registered | None = None
        self._health = router_pb2.HealthReport(serving=True)
        self._any_connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def connected(self) -> bool:
        """Registered with at least one router."""
        return any(link.connected.is_set() for link in self.links)

    @property
    def connected_routers(self) -> list[str]:
        return [link.address for link in self.links if link.connected.is_set()]

    async def wait_connected(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Whether a router (any, when there are several) accepted the registration within
        `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not self.connected:
                    self._any_connected.clear()
                    await self._any_connected.wait()
        except TimeoutError:
            return False
        return True

    def report_health(self, serving: bool, reason: str = "") -> None:
        """Tell the router whether this module can serve and why not; sent at once when the
        stream is open, and again after every reconnect."""
        report = router_pb2.HealthReport(serving=serving, reason="" if serving else reason)
        if report != self._health:
            self._health = report
            for link in self.links:
                link.health_changed.set()

    async def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(
                    self._run(link), name=f"registration:{self.announcement.name}@{link.address}"
                )
                for link in self.links
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for link in self.links:
            link.connected.clear()

    async def _requests(self, link: _RouterLink) -> AsyncIterator[router_pb2.RegisterRequest]:
        yield router_pb2.RegisterRequest(announce=self.announcement)
        link.health_changed.clear()
        yield router_pb2.RegisterRequest(health=self._health)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_interval):
                    await link.health_changed.wait()
            if link.health_changed.is_set():
                link.health_changed.clear()
                yield router_pb2.RegisterRequest(health=self._health)
                continue
            now = timestamp_pb2.Timestamp()
            now.GetCurrentTime()
            yield router_pb2.RegisterRequest(heartbeat=router_pb2.Heartbeat(sent_at=now))

    async def _run(self, link: _RouterLink) -> None:
        # Equal jitter, uniform(d/2, d): many modules restarting together do not reconnect in
        # step, and none retries sooner than half its wait.
        backoff = Backoff(
            BackoffPolicy(initial_s=self.initial_backoff, cap_s=self.max_backoff, jitter="equal")
        )
        async with open_channel(link.address, interceptors=()) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            while True:
                try:
                    async for response in stub.Register(self._requests(link)):
                        if response.WhichOneof("kind") == "registered":
                            self.registered = response.registered
                            link.connected.set()
                            self._any_connected.set()
                            backoff.reset()
                            self._on_connected(link)
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
                link.connected.clear()
                self._on_lost(link, reason)
                await backoff.wait()

    def _on_connected(self, link: _RouterLink) -> None:
        if link.warned:
            log.info(
                "router reachable again, %s registered",
                self.announcement.name,
                extra={"module_name": self.announcement.name, "router": link.address},
            )
        else:
            log.info(
                "registered %s with the router",
                self.announcement.name,
                extra={"module_name": self.announcement.name, "router": link.address},
            )
        link.warned = False

    def _on_lost(self, link: _RouterLink, reason: str) -> None:
        if link.warned:
            return
        link.warned = True
        others = [a for a in self.connected_routers if a != link.address]
        log.warning(
            "router unreachable, serving standalone"
            if not others
            else "router unreachable, still registered with the others",
            extra={
                "module_name": self.announcement.name,
                "router": link.address,
                "reason": reason,
            },
        )
