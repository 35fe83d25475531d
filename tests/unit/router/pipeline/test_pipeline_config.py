"""The pipeline file: the shipped default loads; mistakes fail at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from router.pipeline.config import PipelineConfig, check_against, load_pipeline_config
from router.pipeline.mapping import MappingError
from router.routing.capabilities import load_catalog

if TYPE_CHECKING:
    from pathlib import Path


def test_default_pipeline() -> None:
    config = load_pipeline_config()
    check_against(config, load_catalog())
    assert [s.step_id for s in config.steps] == [
        "enrich.metadata",
        "import.track",
        "notify.track_ready",
    ]
    assert [s.required for s in config.steps] == [False, True, False]
    assert config.steps[1].verify is not None


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("steps:\n  - capability: import.track\n    requird: true\n")
    with pytest.raises(ValidationError):
        load_pipeline_config(path)


def test_unknown_capability_is_refused() -> None:
    config = PipelineConfig.model_validate({"steps": [{"capability": "make.coffee"}]})
    with pytest.raises(ValueError, match="unknown capability"):
        check_against(config, load_catalog())


def test_streaming_capability_is_refused() -> None:
    config = PipelineConfig.model_validate({"steps": [{"capability": "playlist.tracks"}]})
    with pytest.raises(ValueError, match="streams"):
        check_against(config, load_catalog())


def test_bad_expression_is_refused() -> None:
    config = PipelineConfig.model_validate(
        {"steps": [{"capability": "import.track", "request": {"file": "$.a..b"}}]}
    )
    with pytest.raises(MappingError):
        check_against(config, load_catalog())


def test_step_ids_are_unique() -> None:
    with pytest.raises(ValidationError, match="twice"):
        PipelineConfig.model_validate(
            {"steps": [{"capability": "import.track"}, {"capability": "import.track"}]}
        )
