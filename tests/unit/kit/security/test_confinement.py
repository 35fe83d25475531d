"""File confinement: only regular files inside the allowed roots, never through a link, never
the state folder; every refusal is INVALID_ARGUMENT naming the field and the rule."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from google.rpc import error_details_pb2

from services.kit.rpc.errors import InvalidArgument
from services.kit.security.confinement import confined_file

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path, Path]:
    downloads, library, state = tmp_path / "dl", tmp_path / "lib", tmp_path / "dl" / "state"
    for folder in (downloads, library, state):
        folder.mkdir(parents=True, exist_ok=True)
    (downloads / "a.flac").write_bytes(b"fLaC")
    (state / "events.db").write_bytes(b"SQLite")
    return downloads, library, state


def _rule(err: pytest.ExceptionInfo[InvalidArgument]) -> str:
    detail = err.value.details[0]
    assert isinstance(detail, error_details_pb2.BadRequest)
    [violation] = detail.field_violations
    assert violation.field == "file.path"
    return str(violation.description)


def test_a_regular_file_inside_a_root_is_accepted(roots: tuple[Path, Path, Path]) -> None:
    downloads, library, _ = roots
    assert (
        confined_file(downloads / "a.flac", [library, downloads], field="file.path")
        == (downloads / "a.flac").resolve()
    )


@pytest.mark.parametrize(
    ("target", "rule"),
    [
        ("/etc/passwd", "outside the folders"),
        ("{dl}/../lib/x.flac", "contains '..'"),
        ("{dl}/missing.flac", "does not exist"),
        ("relative/a.flac", "not an absolute path"),
        ("", "a path is required"),
        ("{dl}", "not a regular file"),
    ],
)
def test_paths_outside_or_odd_are_refused(
    roots: tuple[Path, Path, Path], target: str, rule: str
) -> None:
    downloads, _, _ = roots
    with pytest.raises(InvalidArgument) as err:
        confined_file(target.format(dl=downloads), [downloads], field="file.path")
    assert rule in _rule(err)


def test_the_state_folder_is_never_a_source(roots: tuple[Path, Path, Path]) -> None:
    downloads, _, state = roots
    with pytest.raises(InvalidArgument) as err:
        confined_file(state / "events.db", [downloads], field="file.path", forbidden=[state])
    assert "state folder" in _rule(err)


def test_links_are_refused_wherever_they_are(
    roots: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    downloads, _, _ = roots
    outside = tmp_path / "secret.flac"
    outside.write_bytes(b"fLaC")
    (downloads / "link.flac").symlink_to(outside)
    (downloads / "inner").symlink_to(tmp_path, target_is_directory=True)
    (downloads / "same.flac").symlink_to(downloads / "a.flac")  # even one pointing inside
    for name in ("link.flac", "inner/secret.flac", "same.flac"):
        with pytest.raises(InvalidArgument) as err:
            confined_file(downloads / name, [downloads], field="file.path")
        assert "symbolic link" in _rule(err), name


def test_special_files_are_refused(roots: tuple[Path, Path, Path]) -> None:
    downloads, _, _ = roots
    fifo = downloads / "pipe.flac"
    os.mkfifo(fifo)
    with pytest.raises(InvalidArgument) as err:
        confined_file(fifo, [downloads], field="file.path")
    assert "not a regular file" in _rule(err)


def test_a_link_above_the_root_is_the_operators_choice(tmp_path: Path) -> None:
    real = tmp_path / "srv" / "downloads"
    real.mkdir(parents=True)
    (real / "a.flac").write_bytes(b"fLaC")
    (tmp_path / "data").symlink_to(tmp_path / "srv", target_is_directory=True)
    configured = tmp_path / "data" / "downloads"
    assert confined_file(configured / "a.flac", [configured], field="file.path") == (
        real / "a.flac"
    )
