"""StatusService.GetStatus: modules, capabilities with ordered providers, warnings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.kit.support.timestamps import timestamp_at
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from router.routing.capabilities import Catalog
    from router.routing.registry import Registry
    from router.routing.warnings import WarningBoard


def build_status(
    registry: Registry, catalog: Catalog, warnings: WarningBoard, started_at: float
) -> router_pb2.GetStatusResponse:
    response = router_pb2.GetStatusResponse(started_at=timestamp_at(started_at))
    for entry in sorted(registry.modules.values(), key=lambda e: e.name):
        response.modules.append(
            router_pb2.ModuleInfo(
                name=entry.name,
                address=entry.address,
                status=entry.status,
                reason=entry.status_reason,
                capabilities=entry.announcement(),
                dynamic=entry.dynamic,
                since=entry.since_timestamp(),
                breaker=entry.breaker.state.value,
                version=entry.version,
            )
        )
    for capability, spec in sorted(catalog.by_capability.items()):
        providers = [
            router_pb2.Provider(
                module=entry.name,
                address=entry.address,
                priority=offer.priority,
                status=entry.status,
                routable=registry.is_routable(entry, offer),
            )
            for entry, offer in registry.providers(capability)
        ]
        response.capabilities.append(
            router_pb2.CapabilityInfo(
                name=capability,
                method=spec.method,
                providers=providers,
                available=any(p.routable for p in providers),
            )
        )
    response.warnings.extend(w.to_proto() for w in warnings.current())
    return response
