"""Build the xDS resources (listeners, clusters, endpoints) from the router's view of the mesh.

Pure: it reads the registry and the catalog and returns messages. One Listener per capability
service, named after it, with an inline route table: a named-module route per provider first
(header `x-soulspot-target-module`), then one route per method to its capability's cluster.
One EDS cluster per capability and one per module; endpoints are grouped by module priority
into localities (highest priority is xDS priority 0), and health is the router's (routable
and required modules up), so a client fails over in the proxy's order.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from services.kit.rpc.policy import FALLBACK_CODES, IDEMPOTENT_FALLBACK_CODES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from google.protobuf.message import Message

    from router.routing.capabilities import Catalog, MethodSpec
    from router.routing.registry import ModuleEntry, Registry
    from router.xds.settings import XdsSection

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINTS_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTES_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
TYPE_NAMES = {
    LISTENER_TYPE: "listeners",
    ROUTES_TYPE: "routes",
    CLUSTER_TYPE: "clusters",
    ENDPOINTS_TYPE: "endpoints",
}
# The metadata a caller sends to name the module that must answer (as with the proxy).
TARGET_HEADER = "x-soulspot-target-module"
# Where a named-module call for a module that does not serve the method goes: a cluster with
# no endpoints, so the call fails UNAVAILABLE instead of reaching another module.
UNROUTED_CLUSTER = "soulspot.unrouted"
# gRPC's retry policy names the codes it retries (gRFC A44); UNIMPLEMENTED, which the proxy
# also falls back on, is not among those gRPC accepts.
_RETRY_ON_NAMES = {
    grpc.StatusCode.CANCELLED: "cancelled",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline-exceeded",
    grpc.StatusCode.INTERNAL: "internal",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "resource-exhausted",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
}
RETRY_ON = ",".join(
    sorted(
        _RETRY_ON_NAMES[c]
        for c in FALLBACK_CODES | IDEMPOTENT_FALLBACK_CODES
        if c in _RETRY_ON_NAMES
    )
)
_ROUTER_FILTER = "envoy.filters.http.router"
_HEALTHY = health_check_pb2.HealthStatus.HEALTHY
_UNHEALTHY = health_check_pb2.HealthStatus.UNHEALTHY


def capability_cluster(capability: str) -> str:
    return f"capability:{capability}"


def module_cluster(module: str) -> str:
    return f"module:{module}"


@dataclass(slots=True)
class Snapshot:
    """Every resource by type URL and name, as Any messages ready to send."""

    resources: dict[str, dict[str, any_pb2.Any]] = field(default_factory=dict)

    def of(self, type_url: str) -> dict[str, any_pb2.Any]:
        return self.resources.get(type_url, {})


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def ip_literal(host: str) -> str | None:
    """`host` when it is an IP address (brackets of an IPv6 literal removed), else None."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        return None
    return bare


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


# -- listeners and routes ---------------------------------------------------------------


def _millis(ms: int) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(ms)
    return duration


def _retry_policy(section: XdsSection) -> route_components_pb2.RetryPolicy:
    base_ms = max(1, round(section.retry_base_interval_s * 1000))
    return route_components_pb2.RetryPolicy(
        retry_on=RETRY_ON,
        num_retries=wrappers_pb2.UInt32Value(value=section.max_retries),
        retry_back_off=route_components_pb2.RetryPolicy.RetryBackOff(
            base_interval=_millis(base_ms), max_interval=_millis(base_ms * 10)
        ),
    )


def _route(
    spec: MethodSpec,
    cluster: str,
    section: XdsSection,
    header: route_components_pb2.HeaderMatcher | None,
) -> route_components_pb2.Route:
    action = route_components_pb2.RouteAction(cluster=cluster)
    if spec.idempotent:
        action.retry_policy.CopyFrom(_retry_policy(section))
    match = route_components_pb2.RouteMatch(path=spec.method)
    if header is not None:
        match.headers.append(header)
    return route_components_pb2.Route(name=f"{spec.method}#{cluster}", match=match, route=action)


def routes_for_service(
    service: str, catalog: Catalog, registry: Registry, section: XdsSection
) -> list[route_components_pb2.Route]:
    """Named-module routes first (a header match wins over the plain path), then one route per
    method to its capability's cluster."""
    specs = [catalog.by_capability[c] for c in catalog.services[service]]
    named: list[route_components_pb2.Route] = []
    for spec in specs:
        for entry, _offer in sorted(registry.providers(spec.capability), key=lambda p: p[0].name):
            # exact_match, not string_match: older xDS clients (grpc-go in grpcurl 1.8)
            # refuse the whole listener for a matcher they do not know.
            header = route_components_pb2.HeaderMatcher(name=TARGET_HEADER, exact_match=entry.name)
            named.append(_route(spec, module_cluster(entry.name), section, header))
        # Any other module named: no other module may answer in its place.
        present = route_components_pb2.HeaderMatcher(name=TARGET_HEADER, present_match=True)
        named.append(_route(spec, UNROUTED_CLUSTER, section, present))
    plain = [_route(spec, capability_cluster(spec.capability), section, None) for spec in specs]
    return named + plain


def listener(
    service: str, catalog: Catalog, registry: Registry, section: XdsSection
) -> listener_pb2.Listener:
    routes = route_pb2.RouteConfiguration(
        name=service,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=service,
                domains=["*"],
                routes=routes_for_service(service, catalog, registry, section),
            )
        ],
    )
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=service,
        route_config=routes,
        # The router filter last: gRPC requires it and ignores what follows it.
        http_filters=[
            hcm_pb2.HttpFilter(name=_ROUTER_FILTER, typed_config=_pack(router_pb2.Router()))
        ],
    )
    return listener_pb2.Listener(
        name=service, api_listener=api_listener_pb2.ApiListener(api_listener=_pack(manager))
    )


# -- clusters ---------------------------------------------------------------------------


def cluster(name: str, section: XdsSection) -> cluster_pb2.Cluster:
    built = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.ApiVersion.V3,
            ),
            service_name=name,
        ),
    )
    if section.outlier_failure_percent > 0:
        built.outlier_detection.CopyFrom(
            outlier_detection_pb2.OutlierDetection(
                interval=duration_pb2.Duration(seconds=1),
                base_ejection_time=duration_pb2.Duration(seconds=5),
                max_ejection_percent=wrappers_pb2.UInt32Value(value=50),
                # Success-rate ejection is on unless told otherwise: failure percentage only.
                enforcing_success_rate=wrappers_pb2.UInt32Value(value=0),
                failure_percentage_threshold=wrappers_pb2.UInt32Value(
                    value=section.outlier_failure_percent
                ),
                enforcing_failure_percentage=wrappers_pb2.UInt32Value(value=100),
                failure_percentage_minimum_hosts=wrappers_pb2.UInt32Value(value=1),
                failure_percentage_request_volume=wrappers_pb2.UInt32Value(
                    value=section.outlier_min_requests
                ),
            )
        )
    return built


# -- endpoints --------------------------------------------------------------------------


def _lb_endpoint(
    entry: ModuleEntry, healthy: bool, resolve: Callable[[str], str | None]
) -> endpoint_components_pb2.LbEndpoint | None:
    host, port = split_address(entry.address)
    ip = resolve(host)
    if ip is None:
        return None
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
            ),
            hostname=entry.name,
        ),
        health_status=_HEALTHY if healthy else _UNHEALTHY,
    )


def prioritized(
    name: str,
    members: Iterable[tuple[ModuleEntry, int, bool]],
    resolve: Callable[[str], str | None],
) -> endpoint_pb2.ClusterLoadAssignment:
    """A load assignment from (module, module priority, healthy): one locality per module
    priority, highest first as xDS priority 0, numbered without gaps; every locality weighs 1
    (gRPC drops a locality without a weight)."""
    by_priority: dict[int, list[endpoint_components_pb2.LbEndpoint]] = {}
    for entry, priority, healthy in members:
        endpoint = _lb_endpoint(entry, healthy, resolve)
        if endpoint is not None:
            by_priority.setdefault(priority, []).append(endpoint)
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for rank, priority in enumerate(sorted(by_priority, reverse=True)):
        assignment.endpoints.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(region="soulspot", zone=f"priority-{priority}"),
                lb_endpoints=sorted(by_priority[priority], key=lambda e: e.endpoint.hostname),
                load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
                priority=rank,
            )
        )
    return assignment


def capability_endpoints(
    capability: str, registry: Registry, resolve: Callable[[str], str | None]
) -> endpoint_pb2.ClusterLoadAssignment:
    members = [
        (entry, offer.priority, registry.is_routable(entry, offer))
        for entry, offer in registry.providers(capability)
    ]
    return prioritized(capability_cluster(capability), members, resolve)


def module_endpoints(
    entry: ModuleEntry, resolve: Callable[[str], str | None]
) -> endpoint_pb2.ClusterLoadAssignment:
    # A named call goes to a healthy module whatever its breaker says (as with the proxy).
    return prioritized(module_cluster(entry.name), [(entry, 0, entry.healthy)], resolve)


# -- everything -------------------------------------------------------------------------


def build_snapshot(
    catalog: Catalog,
    registry: Registry,
    section: XdsSection,
    resolve: Callable[[str], str | None] = ip_literal,
) -> Snapshot:
    """Every resource the router serves now."""
    listeners = {s: _pack(listener(s, catalog, registry, section)) for s in catalog.services}
    names = [capability_cluster(c) for c in catalog.by_capability]
    names += [module_cluster(m) for m in registry.modules]
    names.append(UNROUTED_CLUSTER)
    clusters = {n: _pack(cluster(n, section)) for n in names}
    endpoints: dict[str, Any] = {
        capability_cluster(c): capability_endpoints(c, registry, resolve)
        for c in catalog.by_capability
    }
    endpoints.update(
        {module_cluster(e.name): module_endpoints(e, resolve) for e in registry.modules.values()}
    )
    endpoints[UNROUTED_CLUSTER] = endpoint_pb2.ClusterLoadAssignment(cluster_name=UNROUTED_CLUSTER)
    return Snapshot(
        {
            LISTENER_TYPE: listeners,
            CLUSTER_TYPE: clusters,
            ENDPOINTS_TYPE: {n: _pack(m) for n, m in endpoints.items()},
        }
    )
