"""Choosing the pipeline file and where its runs live."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.pipeline import PIPELINE_FILE_ENV, create_pipeline
from router.pipeline.kv_store import KvRunStore
from router.pipeline.store import SqliteRunStore
from router.settings import RouterSection, RouterSettings
from services.kit.support.settings import KitSettings
from tests.helpers.kv_stores import NATS_REPLICAS, NATS_SERVERS, jetstream_router_settings

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

ONE_STEP = "steps:\n  - capability: import.track\n    required: true\n"


def test_default_pipeline_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PIPELINE_FILE_ENV, raising=False)
    pipeline = create_pipeline(KitSettings(state_dir=tmp_path))
    assert [s.capability for s in pipeline.config.steps] == [
        "enrich.metadata",
        "import.track",
        "notify.track_ready",
    ]


def test_pipeline_file_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(ONE_STEP)
    monkeypatch.setenv(PIPELINE_FILE_ENV, str(path))
    pipeline = create_pipeline(KitSettings(state_dir=tmp_path))
    assert [s.capability for s in pipeline.config.steps] == ["import.track"]


def test_runs_live_in_sqlite_with_the_sqlite_bus(tmp_path: Path) -> None:
    pipeline = create_pipeline(RouterSettings(state_dir=tmp_path))
    assert isinstance(pipeline.store, SqliteRunStore)


def test_runs_live_in_the_shared_kv_with_the_jetstream_bus(tmp_path: Path) -> None:
    settings = jetstream_router_settings(tmp_path, RouterSection(pipeline_lease_s=4.0))
    pipeline = create_pipeline(settings)
    assert isinstance(pipeline.store, KvRunStore)
    assert pipeline.store.servers == NATS_SERVERS
    assert pipeline.store.replicas == NATS_REPLICAS
    assert pipeline.store.lease_s == 4.0
    assert pipeline.store.takeover_interval_s == 2.0
