"""The router's xDS control plane as one piece: the resources, the ADS servicer, and the hooks
the router's assembly needs (serve it, feed it registry changes, close its streams)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from envoy.service.discovery.v3 import ads_pb2_grpc

from router.xds.ads import SERVICE_NAME, AdsClient, AdsServicer
from router.xds.control_plane import ControlPlane
from router.xds.resources import TYPE_NAMES
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from router.routing.capabilities import Catalog
    from router.routing.registry import Registry
    from router.security.caller import Callers
    from router.xds.settings import XdsSection
    from services.kit.rpc.server import KitServer


class XdsService:
    """ADS on the router's own server, fed by its registry."""

    def __init__(
        self, catalog: Catalog, registry: Registry, callers: Callers, section: XdsSection
    ) -> None:
        self.plane = ControlPlane(catalog, registry, section)
        self.servicer = AdsServicer(
            self.plane,
            callers,
            max_streams=section.max_streams_per_identity,
            max_names=section.max_resource_names,
        )
        registry.listeners.append(self.plane.changed)

    def add_to(self, server: KitServer) -> None:
        server.add_service(
            lambda s: ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
                self.servicer, s
            ),
            SERVICE_NAME,
        )

    def clients(self) -> list[AdsClient]:
        """The connected clients, oldest first."""
        return sorted(self.plane.clients, key=lambda c: c.connected_at)

    def fill_status(self, response: router_pb2.GetStatusResponse) -> None:
        """The connected clients: node, identity, and per type what was sent, ACKed, NACKed."""
        for client in self.clients():
            info = router_pb2.XdsClient(
                node_id=client.node_id,
                identity=client.identity.uri if client.identity is not None else "",
                peer=client.peer,
            )
            info.connected_at.FromNanoseconds(int(client.connected_at * 1e9))
            for type_url, state in client.types.items():
                info.subscriptions.append(
                    router_pb2.XdsSubscription(
                        type=TYPE_NAMES[type_url],
                        resource_names=["*"] if state.wildcard else sorted(state.names),
                        sent_version=state.sent_version,
                        acked_version=state.acked_version,
                        last_nack=state.last_nack,
                    )
                )
            response.xds_clients.append(info)

    async def close(self) -> None:
        """End every ADS stream cleanly (clients keep their last configuration) and stop
        pushing."""
        for client in list(self.plane.clients):
            client.closed = True
            client.wake.set()
        await self.plane.close()
