"""The post-download pipeline (download.completed -> steps -> track.ready), run in the router.

Wiring, in the router's main:

    pipeline = create_pipeline(settings)                 # reads the pipeline file
    app = RouterApp(settings, bus=bus, pipeline=pipeline)
    await app.start()
    await pipeline.start(app.address)                    # after the router serves
    try:
        await app.serve()                                # until SIGTERM
    finally:
        await pipeline.stop()                            # closes its store

The pipeline lets go of the router by itself when the router's health turns NOT_SERVING at
shutdown, so its Subscribe stream never holds the server's grace period open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.bus.settings import BusSettings
from router.pipeline.config import DEFAULT_PIPELINE_FILE, PipelineConfig, load_pipeline_config
from router.pipeline.engine import Pipeline
from router.pipeline.kv_store import KvRunStore
from router.settings import RouterSection
from services.kit.support.settings import section_of

if TYPE_CHECKING:
    from pathlib import Path

    from services.kit.support.settings import KitSettings

PIPELINE_FILE_ENV = "SOULSPOT_ROUTER__PIPELINE_FILE"

__all__ = [
    "DEFAULT_PIPELINE_FILE",
    "PIPELINE_FILE_ENV",
    "Pipeline",
    "PipelineConfig",
    "create_pipeline",
    "load_pipeline_config",
]


def create_pipeline(settings: KitSettings, *, pipeline_file: Path | str | None = None) -> Pipeline:
    """The pipeline for a router with these settings: its runs under the state dir, its steps
    from `pipeline_file`, else the router section's `pipeline_file`, else
    SOULSPOT_ROUTER__PIPELINE_FILE, else the shipped pipeline.yaml; it acts only on files in
    the router section's `download_dirs`. With the bus on JetStream its runs live in the
    JetStream KV every router on that NATS shares (one run per event across routers), else
    in SQLite under the state dir."""
    # section_of reads SOULSPOT_ROUTER__PIPELINE_FILE for settings classes without a router
    # section (tests build plain KitSettings).
    section = section_of(settings, "router", RouterSection)
    chosen = pipeline_file or section.pipeline_file or None
    bus = section_of(settings, "bus", BusSettings)
    store = (
        KvRunStore(bus.nats_servers, replicas=bus.nats_replicas, lease_s=section.pipeline_lease_s)
        if bus.backend == "jetstream"
        else None
    )
    return Pipeline(
        None,
        settings.state_dir,
        config_file=chosen,
        download_dirs=section.download_dirs,
        store=store,
    )
