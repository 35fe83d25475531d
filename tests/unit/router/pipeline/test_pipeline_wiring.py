"""Choosing the pipeline file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.pipeline import PIPELINE_FILE_ENV, create_pipeline
from services.kit.support.settings import KitSettings

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
