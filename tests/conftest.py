"""What every test shares: the rule that a fixture name means one thing throughout the tree.

The repository root is on sys.path through pyproject's `pythonpath`, so tests import
`tests.helpers.*` and `tests.standins.*` directly. Fixtures of one folder live in that
folder's conftest.py; a deeper conftest may not redefine a fixture of an enclosing one (the
session stops before collection and names both files).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.fixture_names import shadowed_fixtures


def pytest_sessionstart(session: pytest.Session) -> None:
    shadowed = shadowed_fixtures(Path(__file__).resolve().parent)
    if shadowed:
        raise pytest.UsageError(
            "fixture names must be unambiguous; rename one of each:\n" + "\n".join(shadowed)
        )
