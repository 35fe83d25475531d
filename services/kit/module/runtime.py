"""ModuleRuntime: a running module's server, health, router registration and publisher.

`services.kit.module.runner.run_module(spec)` runs one until SIGTERM; tests use it as an async
context manager:

    async with ModuleRuntime(spec, settings, connect_router=False) as rt:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{rt.port}")
        ...
        rt.publisher.published  # an InMemoryBus when no router is used
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from typing import TYPE_CHECKING, Any, Generic, Self

from services.kit.events.client import (
    EventHandlers,
    EventPublisher,
    InMemoryBus,
    RouterPublisher,
    Subscriber,
)
from services.kit.events.retrying_publisher import RetryingPublisher
from services.kit.module.registration import RouterRegistration
from services.kit.module.spec import ModuleParts, ModuleSpec, SectionT, ServiceBinding
from services.kit.observability.metrics import server_interceptors, start_module_metrics
from services.kit.rpc.capability_channels import CapabilityChannels
from services.kit.rpc.channel import open_channel
from services.kit.rpc.health import OVERALL, KitHealthServicer
from services.kit.rpc.server import KitServer
from services.kit.rpc.targets import resolve_channel_target
from services.kit.security.identity import Identity
from services.kit.support.settings import section_of
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    import grpc

    from services.kit.support.settings import KitSettings

__all__ = ["SHUTDOWN_GRACE_S", "ModuleRuntime", "Publisher"]

log = logging.getLogger("soulspot.module")

SHUTDOWN_GRACE_S = 5.0

# What a module publishes through: services.kit.events.client's RouterPublisher or InMemoryBus.
Publisher = EventPublisher


def _section_of(settings: KitSettings, spec: ModuleSpec[SectionT]) -> SectionT:
    section = getattr(settings, spec.name, None)
    if section is None:
        # A settings class without this module's section (tests use plain KitSettings): the
        # section as SOULSPOT_<MODULE>__* and the config file give it.
        return section_of(None, spec.name, spec.section_cls)
    if not isinstance(section, spec.section_cls):
        # A spec naming one section type while its settings hold another is a programming
        # error: fail at start, not in the middle of a call.
        raise TypeError(
            f"settings.{spec.name} is a {type(section).__name__}, "
            f"not the spec's {spec.section_cls.__name__}"
        )
    return section


class ModuleRuntime(Generic[SectionT]):
    """A running module: server, health, registration and publisher.

    `section` is the module's own settings section, typed by its spec: the factory reads it
    without checking its type.

    Arguments override settings (tests): `host`/`port` (port 0 picks a free port),
    `publisher` (defaults to RouterPublisher with a router, else an InMemoryBus),
    `connect_router=False` to neither register nor publish to a router.
    """

    def __init__(
        self,
        spec: ModuleSpec[SectionT],
        settings: KitSettings | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        publisher: Publisher | None = None,
        connect_router: bool = True,
    ) -> None:
        self.spec = spec
        self.settings = settings if settings is not None else spec.settings_cls()
        self.name = spec.name
        self._section = _section_of(self.settings, spec)
        self.health = KitHealthServicer()
        self._host_override = host
        self._port_override = port
        self._publisher_override = publisher
        self.connect_router = connect_router and bool(self.settings.router_address)
        self.kit_server: KitServer | None = None
        self.router_channel: grpc.aio.Channel | None = None
        # Channels for calling other modules' capabilities; None without a router.
        self.capability_channels: CapabilityChannels | None = None
        self.registration: RouterRegistration | None = None
        self.parts: ModuleParts | None = None
        self.port = 0
        self.address = ""
        self._publisher: Publisher | None = None
        self._health_state: tuple[bool, str] = (True, "")
        self._background: list[Any] = []
        # Whatever a module's factory wants reachable from tests (its registry, its index).
        self.extras: dict[str, Any] = {}
        self.metrics_address = ""
        self._metrics_runner: Any = None

    # -- public API for modules ---------------------------------------------------------------

    @property
    def section(self) -> SectionT:
        """The module's own settings section: settings.<name>, or its defaults when the
        settings have no such field (a plain KitSettings in a test)."""
        return self._section

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            raise RuntimeError("the module runtime is not started")
        return self._publisher

    @property
    def service_names(self) -> list[str]:
        return [s.name for s in self.parts.services] if self.parts else []

    @property
    def serving(self) -> bool:
        return self._health_state[0]

    @property
    def health_reason(self) -> str:
        return self._health_state[1]

    async def set_health(self, serving: bool, reason: str = "") -> None:
        """Mark every service of the module (and the server as a whole) SERVING or
        NOT_SERVING with a reason. Logs only on a change, so a periodic probe may call it
        every time."""
        changed = self._health_state != (serving, reason) and (
            self._health_state[0] != serving or not serving
        )
        self._health_state = (serving, reason)
        for service in (OVERALL, *self.service_names):
            await self.health.set_status(service, serving, None if serving else reason)
        if self.registration is not None:
            self.registration.report_health(serving, reason)
        if changed:
            if serving:
                log.info("serving", extra={"module_name": self.name, "reason": reason})
            else:
                log.warning(
                    "not serving",
                    extra={"module_name": self.name, "status": "NOT_SERVING", "reason": reason},
                )

    # -- lifecycle ------------------------------------------------------------------------------

    def _bind(self) -> tuple[str, int]:
        section = self.section
        host = self._host_override or section.address or "127.0.0.1"
        port: int | None = self._port_override
        if ":" in host and not host.startswith("["):
            host, _, port_text = host.rpartition(":")
            if port is None:
                port = int(port_text)
        if port is None:
            port = section.port if section.port is not None else self.spec.default_port
        return host, port

    async def start(self) -> None:
        if self.connect_router and self.router_channel is None:
            # Several routers' names are looked up off the loop, once, before anything uses
            # the channel (`_router_channel` would look them up on the loop).
            target = await resolve_channel_target(self.settings.router_address)
            self.router_channel = open_channel(target)
        # The publisher and the server object exist before the factory runs, so a factory
        # may capture rt.publisher and call rt.set_health at once.
        self._publisher = self._make_publisher()
        host, port = self._bind()
        self.kit_server = KitServer(
            self.name,
            f"{host}:{port}",
            validate_requests=True,
            grace_s=SHUTDOWN_GRACE_S,
            interceptors=server_interceptors(),
        )
        self.health = self.kit_server.health
        result = self.spec.factory(self)
        if inspect.isawaitable(result):
            result = await result
        self.parts = result if isinstance(result, ModuleParts) else ModuleParts(list(result))
        for binding in self.parts.services:
            self.kit_server.add_service(_registrar(binding), binding.name)
        if not self._health_state[0]:
            # Health set before the services were known covers them too.
            for service in self.service_names:
                await self.health.set_status(service, False, self._health_state[1])
        try:
            bound = await self.kit_server.start()
        except RuntimeError as err:
            # grpc raises RuntimeError when it cannot bind the port.
            raise OSError(f"{self.name}: cannot listen on {host}:{port}: {err}") from err
        if bound == 0:
            raise OSError(f"{self.name}: cannot listen on {host}:{port}")
        self.port = bound
        advertise = self.section.advertise_address
        self.address = advertise or f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{bound}"
        # Off unless SOULSPOT_<MODULE>__METRICS_ADDRESS is set.
        started = await start_module_metrics(host, bound, address=self.section.metrics_address)
        if started is not None:
            self._metrics_runner, self.metrics_address = started

        if self.parts.start is not None:
            await self.parts.start()
        if self.parts.handlers is not None:
            await self._subscribe(self.parts.handlers)
        if self.connect_router:
            await self._start_registration()
            await self._capability_channels().start()
            if self.spec.subscribe is not None:
                handle = await self.spec.subscribe(self, self._router_channel())
                if handle is not None:
                    self._background.append(handle)

    async def _subscribe(self, handlers: EventHandlers) -> None:
        if self.connect_router:
            subscriber = Subscriber(self._router_channel(), consumer=self.name, handlers=handlers)
            await subscriber.start()
            self._background.append(subscriber)
            return
        subscribe = getattr(self._publisher, "subscribe", None)
        if subscribe is not None:
            subscribe(handlers)

    def capability_channel(self, service: str) -> grpc.aio.Channel | None:
        """The channel for calling another module's capability service (its full name, e.g.
        `soulspot.capabilities.v1.LibraryService`), or None when this module runs without a
        router. Straight to the modules over xDS when the router serves it (and
        `SOULSPOT_<MODULE>__XDS` is not false), else through the router's proxy; ask for it
        per call, as the answer moves to xDS once the router offers it."""
        return self._capability_channels().for_service(service) if self.connect_router else None

    def _capability_channels(self) -> CapabilityChannels:
        if self.capability_channels is None:
            self.capability_channels = CapabilityChannels(
                self._router_channel(),
                self.settings.router_address,
                identity=Identity.module(self.name),
                xds=self.section.xds,
            )
        return self.capability_channels

    def _router_channel(self) -> grpc.aio.Channel:
        if self.router_channel is None:
            self.router_channel = open_channel(self.settings.router_address)
        return self.router_channel

    def _make_publisher(self) -> Publisher:
        if self._publisher_override is not None:
            return self._publisher_override
        if self.connect_router:
            # A short inner deadline: the wrapper then says at once that the router is away
            # and keeps retrying with the same event id.
            inner = RouterPublisher(self._router_channel(), source_module=self.name, deadline_s=3.0)
            return RetryingPublisher(inner)
        return InMemoryBus(source_module=self.name)

    async def _start_registration(self) -> None:
        announcement = router_pb2.ModuleAnnouncement(
            name=self.name,
            address=self.address,
            version=self.spec.version,
            metrics_address=self.metrics_address,
            capabilities=[
                router_pb2.CapabilityRegistration(
                    capability=c.name, priority=c.priority, required_modules=c.required_modules
                )
                for c in self.spec.capability_list()
            ],
        )
        self.registration = RouterRegistration(self.settings.router_address, announcement)
        self.registration.report_health(*self._health_state)
        await self.registration.start()

    async def stop(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        """Graceful, in dependency order: NOT_SERVING (the router routes away), in-flight
        calls finish, subscriptions end, the module stops its work and hands over its last
        events, held events get `grace` to reach the router, then the registration ends."""
        await self.health.enter_graceful_shutdown()
        if self.kit_server is not None:
            await self.kit_server.stop(grace)
        for handle in self._background:
            await _stop_handle(handle)
        if self.parts is not None and self.parts.stop is not None:
            try:
                await self.parts.stop()
            except Exception:
                log.exception("module stop hook failed", extra={"module_name": self.name})
        if isinstance(self._publisher, RetryingPublisher):
            for _ in range(int(grace * 10)):
                if self._publisher.pending == 0:
                    break
                await asyncio.sleep(0.1)
            if self._publisher.pending:
                log.error(
                    "shutting down with events the router has not stored",
                    extra={"module_name": self.name, "pending": self._publisher.pending},
                )
            self._publisher.close()
        if self.registration is not None:
            await self.registration.stop()
        if self.capability_channels is not None:
            await self.capability_channels.stop()
        if self.router_channel is not None:
            await self.router_channel.close()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        log.info("stopped", extra={"module_name": self.name})

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop(0)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(0.5)


def _registrar(binding: ServiceBinding) -> Callable[[grpc.aio.Server], object]:
    def register(server: grpc.aio.Server) -> object:
        binding.add_to_server(binding.servicer, server)
        return None

    return register


async def _stop_handle(handle: Any) -> None:
    """Stop something a subscribe hook returned: an object with stop(), or a task."""
    try:
        if isinstance(handle, asyncio.Task):
            handle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handle
            return
        stop = getattr(handle, "stop", None)
        if stop is not None:
            result = stop()
            if inspect.isawaitable(result):
                await result
    except Exception:
        log.exception("stopping a background subscription failed")
