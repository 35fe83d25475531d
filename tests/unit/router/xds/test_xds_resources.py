"""The xDS resources built from the registry: priorities renumbered without gaps, a weight on
every locality, health from the router's view, retries only for idempotent methods, named-
module routes before the plain ones."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from router.routing.capabilities import load_catalog
from router.routing.registry import ACTIVE, INACTIVE, Registry
from router.settings import RouterSection
from router.xds.resources import (
    CLUSTER_TYPE,
    ENDPOINTS_TYPE,
    LISTENER_TYPE,
    RETRY_ON,
    TARGET_HEADER,
    UNROUTED_CLUSTER,
    build_snapshot,
)
from router.xds.settings import XdsSection
from soulspot.router.v1 import router_pb2

SEARCH = "soulspot.capabilities.v1.SearchService"
DOWNLOAD = "soulspot.capabilities.v1.DownloadService"
HEALTHY, UNHEALTHY = 1, 2


def _registry(*modules: tuple[str, int, str], required: dict[str, str] | None = None) -> Registry:
    """Modules as (name, priority, host), all offering search.track, all active."""
    registry = Registry(load_catalog(), RouterSection())
    for port, (name, priority, host) in enumerate(modules, start=50100):
        entry = registry.register_static(
            router_pb2.ModuleAnnouncement(
                name=name,
                address=f"{host}:{port}",
                capabilities=[
                    router_pb2.CapabilityRegistration(
                        capability=capability,
                        priority=priority,
                        required_modules=[r for r in [(required or {}).get(name)] if r],
                    )
                    for capability in ("search.track", "download.track")
                ],
            )
        )
        registry.set_health(entry, ACTIVE, "ok")
    return registry


def _endpoints(registry: Registry, cluster: str) -> endpoint_pb2.ClusterLoadAssignment:
    snapshot = build_snapshot(registry.catalog, registry, XdsSection())
    return endpoint_pb2.ClusterLoadAssignment.FromString(snapshot.of(ENDPOINTS_TYPE)[cluster].value)


def _localities(
    assignment: endpoint_pb2.ClusterLoadAssignment,
) -> list[tuple[int, list[str], list[int]]]:
    return [
        (
            group.priority,
            [e.endpoint.hostname for e in group.lb_endpoints],
            [e.health_status for e in group.lb_endpoints],
        )
        for group in assignment.endpoints
    ]


async def test_priorities_become_xds_priorities_highest_first_without_gaps() -> None:
    registry = _registry(
        ("low", 1, "127.0.0.1"),
        ("top", 90, "127.0.0.1"),
        ("mid", 40, "127.0.0.1"),
        ("mid2", 40, "127.0.0.1"),
    )
    assignment = _endpoints(registry, "capability:search.track")
    assert _localities(assignment) == [
        (0, ["top"], [HEALTHY]),
        (1, ["mid", "mid2"], [HEALTHY, HEALTHY]),
        (2, ["low"], [HEALTHY]),
    ]
    assert all(group.load_balancing_weight.value == 1 for group in assignment.endpoints)
    await registry.close()


async def test_a_module_the_router_would_not_route_to_is_unhealthy() -> None:
    registry = _registry(
        ("top", 90, "127.0.0.1"),
        ("needy", 50, "127.0.0.1"),
        ("backup", 10, "127.0.0.1"),
        required={"needy": "absent"},
    )
    registry.set_health(registry.modules["top"], INACTIVE, "NOT_SERVING")
    assignment = _endpoints(registry, "capability:search.track")
    assert _localities(assignment) == [
        (0, ["top"], [UNHEALTHY]),
        (1, ["needy"], [UNHEALTHY]),
        (2, ["backup"], [HEALTHY]),
    ]
    # Its own cluster (named calls) says the same.
    assert _localities(_endpoints(registry, "module:top")) == [(0, ["top"], [UNHEALTHY])]
    await registry.close()


async def test_a_module_whose_host_cannot_be_resolved_is_left_out() -> None:
    registry = _registry(("named", 90, "no-such-host.invalid"), ("ip", 10, "127.0.0.1"))
    assert _localities(_endpoints(registry, "capability:search.track")) == [(0, ["ip"], [HEALTHY])]
    await registry.close()


def _routes(registry: Registry, service: str) -> list[Any]:
    snapshot = build_snapshot(registry.catalog, registry, XdsSection())
    listener = listener_pb2.Listener.FromString(snapshot.of(LISTENER_TYPE)[service].value)
    manager = hcm_pb2.HttpConnectionManager()
    listener.api_listener.api_listener.Unpack(manager)
    assert manager.http_filters[-1].name == "envoy.filters.http.router"
    (host,) = manager.route_config.virtual_hosts
    return list(host.routes)


async def test_named_module_routes_come_first_then_one_route_per_method() -> None:
    registry = _registry(("top", 90, "127.0.0.1"), ("backup", 10, "127.0.0.1"))
    routes = _routes(registry, SEARCH)
    method = "/soulspot.capabilities.v1.SearchService/SearchTrack"
    summary = [
        (
            r.match.path,
            [(h.name, h.exact_match, h.present_match) for h in r.match.headers],
            r.route.cluster,
        )
        for r in routes
    ]
    assert summary == [
        (method, [(TARGET_HEADER, "backup", False)], "module:backup"),
        (method, [(TARGET_HEADER, "top", False)], "module:top"),
        (method, [(TARGET_HEADER, "", True)], UNROUTED_CLUSTER),
        (method, [], "capability:search.track"),
    ]
    await registry.close()


async def test_retries_only_on_idempotent_methods() -> None:
    registry = _registry(("top", 90, "127.0.0.1"))
    catalog = registry.catalog
    plain = {r.match.path: r.route for r in _routes(registry, DOWNLOAD) if not r.match.headers}
    assert plain
    for path, action in plain.items():
        idempotent = catalog.by_method[path].idempotent
        assert action.HasField("retry_policy") == idempotent, path
        if idempotent:
            assert action.retry_policy.retry_on == RETRY_ON
            assert action.retry_policy.num_retries.value == XdsSection().max_retries
    assert not catalog.by_method[
        "/soulspot.capabilities.v1.DownloadService/DownloadTrack"
    ].idempotent
    assert set(RETRY_ON.split(",")) == {"unavailable", "resource-exhausted", "deadline-exceeded"}
    await registry.close()


async def test_clusters_are_eds_over_ads_with_outlier_detection_only_when_asked() -> None:
    registry = _registry(("top", 90, "127.0.0.1"))
    off = build_snapshot(registry.catalog, registry, XdsSection())
    on = build_snapshot(registry.catalog, registry, XdsSection(outlier_failure_percent=80))
    names = set(off.of(CLUSTER_TYPE))
    assert {"capability:search.track", "module:top", UNROUTED_CLUSTER} <= names
    plain = cluster_pb2.Cluster.FromString(off.of(CLUSTER_TYPE)["module:top"].value)
    assert plain.type == cluster_pb2.Cluster.EDS
    assert plain.eds_cluster_config.eds_config.HasField("ads")
    assert not plain.HasField("outlier_detection")
    detected = cluster_pb2.Cluster.FromString(on.of(CLUSTER_TYPE)["module:top"].value)
    assert detected.outlier_detection.failure_percentage_threshold.value == 80
    assert detected.outlier_detection.enforcing_success_rate.value == 0
    await registry.close()
