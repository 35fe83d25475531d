"""The catalog module: search.track (priority 5) over the library's own index."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.catalog.indexer import CatalogIndexer
from services.catalog.servicer import CatalogServicer
from services.catalog.settings import DEFAULT_PORT, CatalogSection, CatalogSettings
from services.kit.module.spec import Capability, ModuleParts, ModuleSpec, ServiceBinding
from soulspot.capabilities.v1 import search_pb2, search_pb2_grpc

if TYPE_CHECKING:
    from services.kit.module.runtime import ModuleRuntime

__all__ = ["SPEC", "build"]


def build(runtime: ModuleRuntime[CatalogSection]) -> ModuleParts:
    indexer = CatalogIndexer(runtime, runtime.section)
    runtime.extras["indexer"] = indexer
    return ModuleParts(
        services=[
            ServiceBinding.of(
                search_pb2.DESCRIPTOR.services_by_name["SearchService"],
                CatalogServicer(indexer, runtime.section),
                search_pb2_grpc.add_SearchServiceServicer_to_server,
            )
        ],
        start=indexer.start,
        stop=indexer.stop,
        handlers=indexer.handlers,
    )


SPEC = ModuleSpec(
    name="catalog",
    default_port=DEFAULT_PORT,
    capabilities=[Capability("search.track", 5)],
    factory=build,
    section_cls=CatalogSection,
    settings_cls=CatalogSettings,
)
