"""The current xDS resources and their versions, rebuilt shortly after every registry change.

Registry changes come in bursts (a module registering changes its health, breaker, routes);
they are pushed together after `push_debounce_s`. Each resource type has its own version,
bumped only when that type's content changed, and every connected client (router/xds/ads.py)
is woken to send what it subscribed to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING

from router.xds.resources import (
    CLUSTER_TYPE,
    ENDPOINTS_TYPE,
    LISTENER_TYPE,
    ROUTES_TYPE,
    Snapshot,
    build_snapshot,
    ip_literal,
    split_address,
)

if TYPE_CHECKING:
    from router.routing.capabilities import Catalog
    from router.routing.registry import Registry
    from router.xds.ads import AdsClient
    from router.xds.settings import XdsSection

log = logging.getLogger("soulspot.router.xds")

TYPES = (LISTENER_TYPE, ROUTES_TYPE, CLUSTER_TYPE, ENDPOINTS_TYPE)


class ControlPlane:
    """The snapshot every ADS stream serves from, kept current with the registry."""

    def __init__(self, catalog: Catalog, registry: Registry, section: XdsSection) -> None:
        self.catalog = catalog
        self.registry = registry
        self.section = section
        self.versions: dict[str, int] = dict.fromkeys(TYPES, 1)
        self.snapshot: Snapshot = build_snapshot(catalog, registry, section)
        self.clients: set[AdsClient] = set()
        # Module host names resolved to IP addresses (EDS carries addresses, not names).
        self._resolved: dict[str, str] = {}
        self._pending: asyncio.Task[None] | None = None
        # A change arrived that the snapshot does not have yet.
        self._dirty = False
        self.ready_at = time.monotonic() + section.warmup_s

    async def wait_ready(self) -> None:
        """Until the warm-up after start is over (modules have registered again)."""
        left = self.ready_at - time.monotonic()
        if left > 0:
            await asyncio.sleep(left)

    def attach(self, client: AdsClient) -> None:
        self.clients.add(client)

    def detach(self, client: AdsClient) -> None:
        self.clients.discard(client)

    def changed(self) -> None:
        """A registry listener: rebuild and push once the burst is over."""
        self._dirty = True
        if self._pending is not None and not self._pending.done():
            return  # the running rebuild goes round again for this change
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the snapshot is built again at start
        self._pending = loop.create_task(self._rebuild_later())

    async def _rebuild_later(self) -> None:
        while self._dirty:
            await asyncio.sleep(self.section.push_debounce_s)
            self._dirty = False
            try:
                await self.rebuild()
            except Exception:
                log.exception("xDS resources could not be rebuilt")

    async def rebuild(self) -> None:
        await self._resolve_hosts()
        fresh = build_snapshot(self.catalog, self.registry, self.section, self._resolve)
        changed = False
        for type_url in TYPES:
            # Any messages compare by type and packed bytes.
            if fresh.of(type_url) != self.snapshot.of(type_url):
                self.versions[type_url] += 1
                changed = True
        self.snapshot = fresh
        if changed:
            for client in list(self.clients):
                client.wake.set()

    def _resolve(self, host: str) -> str | None:
        return ip_literal(host) or self._resolved.get(host)

    async def _resolve_hosts(self) -> None:
        loop = asyncio.get_running_loop()
        for entry in list(self.registry.modules.values()):
            host, _port = split_address(entry.address)
            if ip_literal(host) is not None:
                continue
            with contextlib.suppress(OSError):
                found = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
                if found:
                    self._resolved[host] = str(found[0][4][0])

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending
