"""What every test shares: the rule that a fixture name means one thing throughout the tree.

The repository root is on sys.path through pyproject's `pythonpath`, so tests import
`tests.helpers.*` and `tests.standins.*` directly. Fixtures of one folder live in that
folder's conftest.py; a deeper conftest may not redefine a fixture of an enclosing one (the
session stops before collection and names both files).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from services.kit.security.tls import current_transport, use_transport
from tests.helpers.fixture_names import shadowed_fixtures

if TYPE_CHECKING:
    from collections.abc import Iterator

# Fixtures every folder may use, defined beside their helpers.
pytest_plugins = ["tests.helpers.nats_server", "tests.helpers.hang_backstop"]


def pytest_sessionstart(session: pytest.Session) -> None:
    shadowed = shadowed_fixtures(Path(__file__).resolve().parent)
    if shadowed:
        raise pytest.UsageError(
            "fixture names must be unambiguous; rename one of each:\n" + "\n".join(shadowed)
        )


@pytest.fixture(autouse=True)
def process_transport_restored() -> Iterator[None]:
    """An entry point run in-process (a CLI command) sets the process's transport; the next
    test starts with the one there was before, so its servers stay plaintext unless it says."""
    previous = current_transport()
    yield
    use_transport(previous)
