"""`soulspot up`'s folders (cli/up/folders.py): sample audio only in our own empty source."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cli.up.folders import ensure_sample_source, prepare_folders
from cli.up.plan import StackPlan, find_compose_file, load_compose, plan_stack

if TYPE_CHECKING:
    from pathlib import Path


def _plan(tmp_path: Path, environ: dict[str, str] | None = None) -> StackPlan:
    compose = load_compose(find_compose_file())
    return plan_stack(compose, tmp_path / "st", environ=environ or {}, only=["folder"])


def test_prepare_makes_the_mounts_and_the_log_folder(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    prepare_folders(plan)
    assert plan.used_mounts
    assert all(plan.mounts[target].is_dir() for target in plan.used_mounts)
    assert (plan.state_dir / "logs").is_dir()


def test_sample_audio_fills_our_empty_source_once(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    prepare_folders(plan)
    made = ensure_sample_source(plan, enabled=True)
    assert made is not None
    source, count = made
    assert source == plan.state_dir / "source"
    files = sorted(p for p in source.rglob("*") if p.is_file())
    assert len(files) == count > 0
    assert {p.suffix for p in files} <= {".flac", ".mp3", ".wav"}
    # A second start leaves the folder as it is.
    assert ensure_sample_source(plan, enabled=True) is None
    assert sorted(p for p in source.rglob("*") if p.is_file()) == files


def test_no_sample_and_user_sources_are_left_alone(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    assert ensure_sample_source(plan, enabled=False) is None
    assert not (plan.state_dir / "source").exists()
    own = _plan(tmp_path, {"SOULSPOT_FOLDER__SOURCE_DIR": str(tmp_path / "music")})
    assert ensure_sample_source(own, enabled=True) is None
    assert not (tmp_path / "music").exists()
