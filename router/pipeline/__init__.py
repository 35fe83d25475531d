"""The post-download pipeline (download.completed -> steps -> track.ready), run in the router."""

from __future__ import annotations

from router.pipeline.config import DEFAULT_PIPELINE_FILE, PipelineConfig, load_pipeline_config
from router.pipeline.engine import Pipeline

__all__ = ["DEFAULT_PIPELINE_FILE", "Pipeline", "PipelineConfig", "load_pipeline_config"]
