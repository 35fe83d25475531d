"""The pipeline file: which steps run, in which order, and how their requests are built."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from router.pipeline.mapping import validate_mapping

if TYPE_CHECKING:
    from router.routing.capabilities import Catalog

DEFAULT_PIPELINE_FILE = Path(__file__).with_name("pipeline.yaml")


class _Strict(BaseModel):
    # A typo in the pipeline file must fail at start-up, not silently change behaviour.
    model_config = ConfigDict(extra="forbid", frozen=True)


class VerifyConfig(_Strict):
    """How to find out whether a non-idempotent step already took effect before a crash."""

    capability: str
    request: dict[str, Any] = Field(default_factory=dict)
    # An expression over the context plus "verify" (the verify call's response); truthy
    # means the step already took effect.
    done_if: str
    # The step's result when it already took effect (mapped like a request).
    result: dict[str, Any] = Field(default_factory=dict)


class StepConfig(_Strict):
    capability: str
    # The key of this step's result under "$.steps"; defaults to the capability name.
    id: str = ""
    required: bool = False
    request: dict[str, Any] = Field(default_factory=dict)
    # Per-call deadline.
    timeout_s: float = Field(default=30.0, gt=0)
    # Calls tried for transient errors (the proxy already fell back between modules).
    attempts: int = Field(default=3, ge=1)
    # How long to wait for a healthy module before skipping (optional) or failing (required).
    wait_s: float = Field(default=0.0, ge=0)
    verify: VerifyConfig | None = None

    @property
    def step_id(self) -> str:
        return self.id or self.capability


class PipelineConfig(_Strict):
    steps: list[StepConfig]
    # What track.ready carries: "track" and "file" mappings.
    ready: dict[str, Any] = Field(
        default_factory=lambda: {"track": "$.track", "file": "$.file"},
    )
    # Runs executing at once; more wait their turn.
    max_concurrent_runs: int = Field(default=8, ge=1)
    # After a router start, every step waits at least this long for a healthy module, so
    # resumed runs do not skip steps only because modules have not registered again yet.
    startup_grace_s: float = Field(default=10.0, ge=0)
    # How often deferred steps are retried even without a health change (a safety net).
    deferred_sweep_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _unique_ids(self) -> PipelineConfig:
        seen: set[str] = set()
        for step in self.steps:
            if step.step_id in seen:
                raise ValueError(f"step id {step.step_id!r} appears twice")
            seen.add(step.step_id)
        return self


def check_against(config: PipelineConfig, catalog: Catalog) -> None:
    """Refuse capabilities the contracts do not define and malformed expressions."""
    for index, step in enumerate(config.steps):
        where = f"steps[{index}] ({step.step_id})"
        names = [step.capability] + ([step.verify.capability] if step.verify else [])
        for name in names:
            spec = catalog.by_capability.get(name)
            if spec is None:
                raise ValueError(f"{where}: unknown capability {name!r}")
            if spec.request_streaming or spec.response_streaming:
                raise ValueError(f"{where}: {name} streams; a pipeline step must be unary")
        validate_mapping(step.request, f"{where}.request")
        if step.verify is not None:
            validate_mapping(step.verify.request, f"{where}.verify.request")
            validate_mapping(step.verify.done_if, f"{where}.verify.done_if")
            validate_mapping(step.verify.result, f"{where}.verify.result")
    validate_mapping(config.ready, "ready")


def load_pipeline_config(path: Path | str | None = None) -> PipelineConfig:
    """Read a pipeline file (the shipped default when `path` is None)."""
    source = Path(path) if path else DEFAULT_PIPELINE_FILE
    with source.open(encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: a pipeline file is a mapping with a 'steps' list")
    return PipelineConfig.model_validate(raw)
