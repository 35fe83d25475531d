"""The fixture-name check the root conftest runs: a deeper conftest redefining an enclosing
conftest's fixture is reported; fixtures of sibling folders may share a name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.helpers.fixture_names import fixture_names, shadowed_fixtures

if TYPE_CHECKING:
    from pathlib import Path

OUTER = """
import pytest

@pytest.fixture
def channel(): ...

@pytest.fixture(name="router")
def _router(): ...

def not_a_fixture(): ...
"""


def _conftest(folder: Path, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "conftest.py"
    path.write_text(source)
    return path


def test_fixture_names_reads_decorated_functions_and_their_name_argument(tmp_path: Path) -> None:
    assert fixture_names(_conftest(tmp_path, OUTER)) == {"channel", "router"}


def test_a_deeper_conftest_redefining_a_fixture_is_reported(tmp_path: Path) -> None:
    _conftest(tmp_path, OUTER)
    inner = "import pytest\n\n@pytest.fixture\nasync def router(): ...\n"
    _conftest(tmp_path / "a" / "b", inner)

    shadowed = shadowed_fixtures(tmp_path)

    assert shadowed == ["a/b/conftest.py redefines fixture 'router' of conftest.py"]


def test_sibling_folders_may_use_one_name(tmp_path: Path) -> None:
    sibling = "import pytest\n\n@pytest.fixture\ndef channel(): ...\n"
    _conftest(tmp_path / "kit", sibling)
    _conftest(tmp_path / "router", sibling)

    assert shadowed_fixtures(tmp_path) == []
