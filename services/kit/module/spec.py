"""What a module declares about itself: its spec, capabilities, services and settings section.

A module's `module.py` holds one `ModuleSpec` and the `build(runtime)` factory it names; the
runtime (services/kit/module/runtime.py) serves what the factory returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

from pydantic import Field

from services.kit.support.settings import KitSettings, Section

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    import grpc
    from google.protobuf.descriptor import ServiceDescriptor

    from services.kit.events.client import EventHandlers
    from services.kit.module.runtime import ModuleRuntime

__all__ = [
    "Built",
    "Capability",
    "ModuleParts",
    "ModuleSection",
    "ModuleSpec",
    "SectionT",
    "ServiceBinding",
]


class ModuleSection(Section):
    """Settings every module section has: where its gRPC server listens.

    `SOULSPOT_<MODULE>__ADDRESS` is the bind host (or host:port); `SOULSPOT_<MODULE>__PORT`
    the port; `SOULSPOT_<MODULE>__ADVERTISE_ADDRESS` the host:port announced to the router
    when the bind address is not reachable as is (0.0.0.0 in a container);
    `SOULSPOT_<MODULE>__METRICS_ADDRESS` where /metrics is served (off when empty; `auto` is
    the gRPC port + 1000, a bare port the gRPC host).
    """

    address: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    advertise_address: str = ""
    metrics_address: str = ""
    # SOULSPOT_<MODULE>__XDS: call other modules' capabilities straight over xDS when the
    # router serves it (false: always through the router's proxy).
    xds: bool = True


# The type of a module's own settings section: what `runtime.section` gives its factory.
SectionT = TypeVar("SectionT", bound=ModuleSection)


@dataclass(frozen=True)
class Capability:
    """One capability the module announces to the router."""

    name: str
    priority: int = 0
    required_modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service the module serves: its servicer and the generated add_*_to_server."""

    name: str  # full service name, e.g. "soulspot.capabilities.v1.DownloadService"
    servicer: object
    add_to_server: Callable[[Any, grpc.aio.Server], None]

    @classmethod
    def of(
        cls,
        descriptor: ServiceDescriptor,
        servicer: object,
        add_to_server: Callable[[Any, grpc.aio.Server], None],
    ) -> ServiceBinding:
        return cls(descriptor.full_name, servicer, add_to_server)


@dataclass
class ModuleParts:
    """What a module's factory returns: its services and optional lifecycle hooks.

    `start` runs after the server is listening (probe a backend, open subscriptions);
    `stop` runs at shutdown before the server stops (cancel background work).
    """

    services: Sequence[ServiceBinding]
    start: Callable[[], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None
    # Handlers to subscribe with, as the durable consumer named after the module: through the
    # router when there is one, else on an in-memory bus publisher (tests) that accepts
    # subscribe().
    handlers: EventHandlers | None = None


# What a factory returns: its parts, or only its services, directly or from a coroutine.
Built: TypeAlias = "ModuleParts | Sequence[ServiceBinding]"


@dataclass(frozen=True)
class ModuleSpec(Generic[SectionT]):
    """Who a module is and how to build it.

    `capabilities` may be given as `Capability` values or `(name, priority, required)` tuples.
    `section_cls` is the type of the module's own settings section, the field named `name` of
    `settings_cls` (the module's KitSettings subclass); the factory gets it, typed, as
    `runtime.section`.
    """

    name: str
    default_port: int
    capabilities: Sequence[Capability | tuple[str, int, Sequence[str]]]
    # Builds the module given the runtime.
    factory: Callable[[ModuleRuntime[SectionT]], Built | Awaitable[Built]]
    section_cls: type[SectionT]
    settings_cls: type[KitSettings] = KitSettings
    version: str = "0.1.0"
    # Subscription setup that needs a router channel: called with (runtime, channel) once the
    # router channel exists; what it returns (a task, or an object with stop()) is stopped at
    # shutdown.
    subscribe: Callable[[ModuleRuntime[SectionT], grpc.aio.Channel], Awaitable[Any]] | None = None

    def capability_list(self) -> list[Capability]:
        out = []
        for item in self.capabilities:
            if isinstance(item, Capability):
                out.append(item)
            else:
                name, priority, required = item
                out.append(Capability(name, priority, tuple(required)))
        return out
