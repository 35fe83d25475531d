"""The routing table (capability -> routable providers, in order), versioned, streamed to
clients that call modules directly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from google.protobuf import duration_pb2, timestamp_pb2

from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from router.routing.capabilities import Catalog
    from router.routing.registry import Registry, Status

# (module, address, priority, status) per capability, in routing order.
Snapshot = dict[str, tuple[tuple[str, str, int, "Status"], ...]]


class RoutingTable:
    def __init__(self, registry: Registry, catalog: Catalog, ttl: float) -> None:
        self.registry = registry
        self.catalog = catalog
        self.ttl = ttl
        self.version = 0
        self.snapshot: Snapshot = {}
        self._changed = asyncio.Event()
        self._closed = False
        self.refresh()

    def close(self) -> None:
        """End every watch stream (before the server stops, so they end cleanly)."""
        self._closed = True
        self._changed.set()

    def _take(self) -> Snapshot:
        snap: Snapshot = {}
        for capability in self.catalog.by_capability:
            snap[capability] = tuple(
                (e.name, e.address, e.offers[capability].priority, e.status)
                for e in self.registry.ordered(capability)
            )
        return snap

    def refresh(self) -> bool:
        """Recompute; True (and watchers woken) when anything changed."""
        snap = self._take()
        if snap == self.snapshot and self.version:
            return False
        self.snapshot = snap
        self.version += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()
        return True

    def available(self, capability: str) -> bool:
        return bool(self.snapshot.get(capability))

    def to_proto(self) -> router_pb2.WatchRoutingTableResponse:
        now = timestamp_pb2.Timestamp()
        now.FromNanoseconds(time.time_ns())
        ttl = duration_pb2.Duration()
        ttl.FromNanoseconds(int(self.ttl * 1e9))
        routes = []
        for capability, providers in self.snapshot.items():
            spec = self.catalog.by_capability[capability]
            routes.append(
                router_pb2.Route(
                    capability=capability,
                    method=spec.method,
                    providers=[
                        router_pb2.Provider(
                            module=name,
                            address=address,
                            priority=priority,
                            status=status,
                            routable=True,
                        )
                        for name, address, priority, status in providers
                    ],
                )
            )
        return router_pb2.WatchRoutingTableResponse(
            version=self.version, routes=routes, ttl=ttl, generated_at=now
        )

    async def watch(
        self, refresh_every: float | None = None
    ) -> AsyncIterator[router_pb2.WatchRoutingTableResponse]:
        """The table now, then again on every change (and at least every `refresh_every`
        seconds, so a client's ttl never runs out while the router is up)."""
        interval = refresh_every if refresh_every is not None else self.ttl / 3
        while not self._closed:
            changed = self._changed
            yield self.to_proto()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=interval)
            if self._closed:
                return
