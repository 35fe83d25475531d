"""Known modules, their status, and the ordered candidates for each capability."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from router.routing.breaker import BreakerState, CircuitBreaker
from services.kit.observability.metrics import MeshMetrics, default_metrics
from services.kit.rpc.channel import open_channel
from services.kit.rpc.errors import AlreadyExists, InvalidArgument, bad_request
from services.kit.rpc.validation import validate_request
from services.kit.support.timestamps import timestamp_at
from soulspot.common.v1 import module_pb2
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from collections.abc import Callable

    import grpc
    from google.protobuf import timestamp_pb2

    from router.routing.capabilities import Catalog
    from router.settings import RouterSection
    from services.kit.security.identity import Identity

log = logging.getLogger("soulspot.router.registry")

ACTIVE = module_pb2.MODULE_STATUS_ACTIVE
INACTIVE = module_pb2.MODULE_STATUS_INACTIVE
DEGRADED = module_pb2.MODULE_STATUS_DEGRADED
UNKNOWN = module_pb2.MODULE_STATUS_UNKNOWN

# A module that went away comes back on the same address; probe it often, not every 120 s.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
)
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(?P<port>\d{1,5})$")

Status: TypeAlias = "module_pb2.ModuleStatus.ValueType"
StatusCallback: TypeAlias = "Callable[[str, Status, Status, str], None]"


def status_name(status: Status) -> str:
    return module_pb2.ModuleStatus.Name(status).removeprefix("MODULE_STATUS_").lower()


def address_problem(address: str) -> str | None:
    """Why `address` is not a usable host:port, or None when it is."""
    match = _HOST_PORT.match(address)
    if match is None:
        return f"address {address!r} is not host:port"
    port = int(match["port"])
    if not 0 < port < 65536:
        return f"address {address!r} has port {port} outside 1-65535"
    return None


@dataclass(frozen=True, slots=True)
class Offer:
    """One capability a module offers."""

    capability: str
    priority: int
    required_modules: tuple[str, ...]


@dataclass(eq=False)
class ModuleEntry:
    name: str
    address: str
    offers: dict[str, Offer]
    dynamic: bool
    breaker: CircuitBreaker
    version: str = ""
    health: Status = UNKNOWN
    reason: str = "not checked yet"
    # What the module itself says about its health (grpc.health carries no reason).
    reported_reason: str = ""
    since: float = field(default_factory=time.time)
    # Registration streams that replaced this one must not be torn down by its end.
    generation: int = 0
    stream_open: bool = False
    # The verified identity that registered it (None: static, or a plaintext router).
    owner: Identity | None = None
    # Set when a newer registration of the same identity replaced this one: its stream ends.
    superseded: asyncio.Event = field(default_factory=asyncio.Event)
    # Forgetting this entry once its stream is gone (gone_module_ttl_s).
    expiry: asyncio.TimerHandle | None = None
    channel: grpc.aio.Channel | None = None
    # Method multicallables cached per method path: building one per call costs throughput.
    callables: dict[str, object] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        if self.health == ACTIVE and self.breaker.state is not BreakerState.CLOSED:
            return DEGRADED
        return self.health

    @property
    def status_reason(self) -> str:
        state = self.breaker.state
        if self.health == ACTIVE and state is not BreakerState.CLOSED:
            return f"circuit breaker {state.value} after repeated call failures"
        if self.health == INACTIVE and self.reported_reason:
            return f"{self.reason}: {self.reported_reason}"
        return self.reason

    @property
    def healthy(self) -> bool:
        """Health checks pass (whatever the breaker says)."""
        return self.health in (ACTIVE, DEGRADED)

    @property
    def routable(self) -> bool:
        return self.healthy and self.breaker.state is not BreakerState.OPEN

    def announcement(self) -> list[router_pb2.CapabilityRegistration]:
        return [
            router_pb2.CapabilityRegistration(
                capability=o.capability,
                priority=o.priority,
                required_modules=list(o.required_modules),
            )
            for o in self.offers.values()
        ]

    def since_timestamp(self) -> timestamp_pb2.Timestamp:
        return timestamp_at(self.since)


class Registry:
    """The module table. Every change calls the change listeners (routing table, health,
    warnings) synchronously, so nobody routes on a stale view."""

    def __init__(
        self, catalog: Catalog, settings: RouterSection, metrics: MeshMetrics | None = None
    ) -> None:
        self.catalog = catalog
        self.settings = settings
        self.metrics = metrics if metrics is not None else default_metrics()
        self.modules: dict[str, ModuleEntry] = {}
        self._generations = itertools.count(1)
        self._rr: dict[str, int] = {}
        self._offer_cache: dict[str, list[tuple[ModuleEntry, Offer]]] = {}
        self.listeners: list[Callable[[], None]] = []
        self.on_status_change: StatusCallback | None = None

    # -- registration -------------------------------------------------------------------

    def validate(self, announcement: router_pb2.ModuleAnnouncement) -> None:
        validate_request(announcement)
        violations: dict[str, str] = {}
        problem = address_problem(announcement.address)
        if problem is not None:
            violations["address"] = problem
        seen: set[str] = set()
        for i, cap in enumerate(announcement.capabilities):
            path = f"capabilities[{i}].capability"
            if cap.capability not in self.catalog.by_capability:
                known = ", ".join(sorted(self.catalog.by_capability))
                violations[path] = f"unknown capability {cap.capability!r} (known: {known})"
            elif cap.capability in seen:
                violations[path] = f"capability {cap.capability!r} is listed twice"
            seen.add(cap.capability)
        if violations:
            raise InvalidArgument(
                f"module {announcement.name!r}: invalid announcement: "
                + "; ".join(violations.values()),
                details=[bad_request(violations)],
            )

    def register(
        self,
        announcement: router_pb2.ModuleAnnouncement,
        *,
        dynamic: bool,
        owner: Identity | None = None,
    ) -> ModuleEntry:
        """Add or replace a module. A live (stream open, not inactive) dynamic module of the
        same name is refused: two processes must not share a name. With a verified `owner`,
        the same identity replaces its own live entry (a restart whose old stream has not
        closed yet), and the old stream is told to end."""
        self.validate(announcement)
        old = self.modules.get(announcement.name)
        restart = owner is not None and old is not None and old.owner == owner
        if (
            old is not None
            and not restart
            and old.dynamic
            and old.stream_open
            and old.health != INACTIVE
        ):
            raise AlreadyExists(
                f"module {announcement.name!r} is already registered and live at {old.address}",
                details=[
                    bad_request(
                        {"name": f"a live module named {announcement.name!r} is registered"}
                    )
                ],
            )
        entry = ModuleEntry(
            name=announcement.name,
            address=announcement.address,
            offers={
                c.capability: Offer(c.capability, c.priority, tuple(c.required_modules))
                for c in announcement.capabilities
            },
            dynamic=dynamic,
            version=announcement.version,
            breaker=CircuitBreaker(
                self.settings.breaker_failures,
                self.settings.breaker_cooldown_s,
                on_change=functools.partial(self._breaker_changed, announcement.name),
                name=announcement.name,
                metrics=self.metrics,
            ),
            generation=next(self._generations),
            stream_open=dynamic,
            owner=owner,
        )
        # Mutual TLS as the router when the process has a transport; no kit interceptors:
        # the proxy forwards the caller's metadata itself.
        entry.channel = open_channel(entry.address, interceptors=(), options=CHANNEL_OPTIONS)
        if old is not None:
            self._close_channel(old)
            self._cancel_expiry(old)
            if old.stream_open:
                log.info(
                    "module %s registered again by %s: its previous stream is replaced",
                    old.name,
                    owner,
                    extra={"module_name": old.name, "operation": "register"},
                )
                old.superseded.set()
        self.modules[entry.name] = entry
        self._notify_status(entry.name, old.status if old else UNKNOWN, entry.status, entry.reason)
        self.changed()
        return entry

    def register_static(self, announcement: router_pb2.ModuleAnnouncement) -> ModuleEntry:
        return self.register(announcement, dynamic=False)

    def stream_closed(self, name: str, generation: int) -> None:
        entry = self.modules.get(name)
        if entry is None or entry.generation != generation:
            return
        entry.stream_open = False
        self.set_health(entry, INACTIVE, "registration stream closed")
        # Listed as inactive for a while (it may come back), then forgotten: a name whose
        # process never returns must not stay forever.
        self._cancel_expiry(entry)
        entry.expiry = asyncio.get_running_loop().call_later(
            self.settings.gone_module_ttl_s, self._forget, entry
        )

    def _forget(self, entry: ModuleEntry) -> None:
        entry.expiry = None
        if self.modules.get(entry.name) is not entry or entry.stream_open:
            return
        del self.modules[entry.name]
        self._close_channel(entry)
        log.info(
            "module %s forgotten: no registration stream for %.0f s",
            entry.name,
            self.settings.gone_module_ttl_s,
            extra={"module_name": entry.name, "operation": "expire"},
        )
        self.changed()

    @staticmethod
    def _cancel_expiry(entry: ModuleEntry) -> None:
        if entry.expiry is not None:
            entry.expiry.cancel()
            entry.expiry = None

    def get(self, name: str) -> ModuleEntry | None:
        return self.modules.get(name)

    def _close_channel(self, entry: ModuleEntry) -> None:
        channel, entry.channel = entry.channel, None
        entry.callables.clear()
        if channel is not None:
            # Closing is async; a task lets in-flight calls on the old channel end first.
            asyncio.get_running_loop().create_task(channel.close(grace=1.0))

    async def close(self) -> None:
        for entry in self.modules.values():
            self._cancel_expiry(entry)
            if entry.channel is not None:
                await entry.channel.close()
                entry.channel = None

    # -- status -------------------------------------------------------------------------

    def set_health(self, entry: ModuleEntry, health: Status, reason: str) -> None:
        if self.modules.get(entry.name) is not entry:
            return  # a replaced registration's watcher reporting late
        if entry.health == health and entry.reason == reason:
            return
        previous = entry.status
        entry.health = health
        entry.reason = reason
        entry.since = time.time()
        if health == ACTIVE and previous == INACTIVE:
            # It came back: the failures that opened the breaker belong to its last life.
            entry.breaker.reset()
        if previous != entry.status:
            log.info(
                "module %s is %s: %s",
                entry.name,
                status_name(entry.status),
                reason,
                extra={
                    "module_name": entry.name,
                    "status": status_name(entry.status),
                    "reason": reason,
                },
            )
            self._notify_status(entry.name, previous, entry.status, reason)
        self.changed()

    def set_reported_health(self, entry: ModuleEntry, report: router_pb2.HealthReport) -> None:
        reason = "" if report.serving else report.reason
        if self.modules.get(entry.name) is entry and entry.reported_reason != reason:
            entry.reported_reason = reason
            self.changed()

    def _notify_status(self, name: str, previous: Status, current: Status, reason: str) -> None:
        if self.on_status_change is not None and previous != current:
            try:
                self.on_status_change(name, previous, current, reason)
            except Exception:
                log.exception("status change hook failed for %s", name)

    def _breaker_changed(self, name: str, state: BreakerState) -> None:
        self.changed()
        if state is BreakerState.OPEN:
            # The breaker half-opens by the clock alone; tell the listeners when it does.
            asyncio.get_running_loop().call_later(
                self.settings.breaker_cooldown_s + 0.01, self._breaker_cooled, name
            )

    def _breaker_cooled(self, name: str) -> None:
        entry = self.modules.get(name)
        if entry is not None:
            entry.breaker.publish()
        self.changed()

    def changed(self) -> None:
        self._offer_cache.clear()
        for listener in list(self.listeners):
            listener()

    # -- routing ------------------------------------------------------------------------

    def providers(self, capability: str) -> list[tuple[ModuleEntry, Offer]]:
        """Every module offering the capability, best first (routable or not)."""
        found = [(e, e.offers[capability]) for e in self.modules.values() if capability in e.offers]
        found.sort(
            key=lambda p: (
                not self.is_routable(*p),
                -p[1].priority,
                p[0].name,
            )
        )
        return found

    def _offers(self, capability: str) -> list[tuple[ModuleEntry, Offer]]:
        # Cached by priority between changes: the per-call path only filters it.
        cached = self._offer_cache.get(capability)
        if cached is None:
            cached = sorted(
                (
                    (e, e.offers[capability])
                    for e in self.modules.values()
                    if capability in e.offers
                ),
                key=lambda p: (-p[1].priority, p[0].name),
            )
            self._offer_cache[capability] = cached
        return cached

    def requirements_met(self, offer: Offer) -> bool:
        for name in offer.required_modules:
            required = self.modules.get(name)
            if required is None or not required.healthy:
                return False
        return True

    def is_routable(self, entry: ModuleEntry, offer: Offer) -> bool:
        return entry.routable and self.requirements_met(offer)

    def ordered(self, capability: str) -> list[ModuleEntry]:
        """The routable providers in the canonical order (no spreading)."""
        return [e for e, o in self.providers(capability) if self.is_routable(e, o)]

    def candidates(self, capability: str) -> list[ModuleEntry]:
        """The routable providers in the order to try them now: higher priority first, equal
        priorities taking turns. A half-open module keeps its place: its trial call is how
        the breaker learns that it recovered."""
        ranked = [
            (entry, offer)
            for entry, offer in self._offers(capability)
            if entry.routable and self.requirements_met(offer)
        ]
        if len(ranked) < 2:
            return [e for e, _ in ranked]
        turn = self._rr.get(capability, 0)
        self._rr[capability] = turn + 1
        out: list[ModuleEntry] = []
        for _priority, group_iter in itertools.groupby(ranked, key=lambda p: p[1].priority):
            group = [e for e, _ in group_iter]
            shift = turn % len(group)
            out.extend(group[shift:] + group[:shift])
        return out
