"""The library module: what it serves and how it is built."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from services.kit.module.periodic import Periodic
from services.kit.module.spec import Capability, ModuleParts, ModuleSpec, ServiceBinding
from services.library.importer import Importer
from services.library.library_store import LibraryStore
from services.library.naming import validate_template
from services.library.playlists import PlaylistWriter
from services.library.servicer import LibraryServicer
from services.library.settings import DEFAULT_PORT, LibrarySection, LibrarySettings
from soulspot.capabilities.v1 import library_pb2, library_pb2_grpc

if TYPE_CHECKING:
    from services.kit.module.runtime import ModuleRuntime

__all__ = ["SPEC", "build"]


def build(runtime: ModuleRuntime[LibrarySection]) -> ModuleParts:
    section = runtime.section
    # A bad template is a configuration error: refuse to start rather than misfile tracks.
    validate_template(section.path_template)
    store_path = section.catalog_path or runtime.settings.state_dir / "library.sqlite3"
    store = LibraryStore(store_path)
    importer = Importer(
        store,
        runtime.settings.library_root.absolute(),
        section.path_template,
        import_dirs=section.import_dirs,
        forbidden=[runtime.settings.state_dir],
    )
    servicer = LibraryServicer(importer, runtime.publisher, PlaylistWriter(importer))

    async def check_health() -> None:
        if not importer.import_dirs:
            # Fail closed: with no folder to import from, every import.track would be refused.
            await runtime.set_health(
                False, "no import folder is configured (SOULSPOT_LIBRARY__IMPORT_DIRS is empty)"
            )
            return
        problem = await asyncio.to_thread(importer.check_writable)
        if problem is None:
            await runtime.set_health(True, f"library at {importer.root}")
        else:
            await runtime.set_health(False, problem)

    watcher = Periodic("library health probe", section.health_interval_s, check_health)

    async def start() -> None:
        await check_health()
        watcher.start()

    async def stop() -> None:
        await servicer.outbox.close()
        await watcher.stop()
        store.close()

    return ModuleParts(
        services=[
            ServiceBinding.of(
                library_pb2.DESCRIPTOR.services_by_name["LibraryService"],
                servicer,
                library_pb2_grpc.add_LibraryServiceServicer_to_server,
            )
        ],
        start=start,
        stop=stop,
    )


SPEC = ModuleSpec(
    name="library",
    default_port=DEFAULT_PORT,
    capabilities=[
        Capability("import.track", 10),
        Capability("library.check_downloaded", 10),
        Capability("library.statistics", 10),
        Capability("library.playlist", 10),
    ],
    factory=build,
    section_cls=LibrarySection,
    settings_cls=LibrarySettings,
)
