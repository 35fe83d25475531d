"""The local folders of a planned stack: the stand-ins for the containers' volumes, the log
folder, and sample audio for the folder module when nothing else is configured."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cli.up.plan import StackPlan

SOURCE_DIR_ENV = "SOULSPOT_FOLDER__SOURCE_DIR"


def prepare_folders(plan: StackPlan) -> None:
    for target in plan.used_mounts:
        plan.mounts[target].mkdir(parents=True, exist_ok=True)
    (plan.state_dir / "logs").mkdir(parents=True, exist_ok=True)


def ensure_sample_source(plan: StackPlan, *, enabled: bool) -> tuple[Path, int] | None:
    """Fill the folder module's source with sample audio when it is ours and empty.

    Ours means the plan put it under the state folder (the user configured no source of their
    own); a folder that holds any file is left alone. Returns (folder, files written).
    """
    folder_proc = next((p for p in plan.processes if SOURCE_DIR_ENV in p.env), None)
    if not enabled or folder_proc is None:
        return None
    source = Path(folder_proc.env[SOURCE_DIR_ENV])
    if not source.resolve().is_relative_to(plan.state_dir):
        return None
    if source.is_dir() and any(p.is_file() for p in source.rglob("*")):
        return None
    from services.kit.testing.sample_audio import DEFAULT_SAMPLE_TRACKS, make_sample_library

    written = make_sample_library(source, DEFAULT_SAMPLE_TRACKS)
    return source, len(written)
