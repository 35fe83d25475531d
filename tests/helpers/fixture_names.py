"""Finds conftest fixtures that shadow a fixture of the same name in an enclosing conftest.

pytest lets a deeper conftest.py redefine a fixture silently: a test then gets whichever
definition is nearest, and a name that means one thing in one folder means another below it.
The check reads the conftest files' source (no import), so it runs before collection.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def _is_fixture_decorator(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Attribute):
        return target.attr == "fixture"
    return isinstance(target, ast.Name) and target.id == "fixture"


def _fixture_name(function: ast.FunctionDef | ast.AsyncFunctionDef, decorator: ast.expr) -> str:
    if isinstance(decorator, ast.Call):
        for keyword in decorator.keywords:
            if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                return str(keyword.value.value)
    return function.name


def fixture_names(conftest: Path) -> set[str]:
    """The fixtures a conftest.py defines at module level (`@pytest.fixture`, `name=` too)."""
    names: set[str] = set()
    for node in ast.parse(conftest.read_text(), filename=str(conftest)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.update(
                _fixture_name(node, d) for d in node.decorator_list if _is_fixture_decorator(d)
            )
    return names


def shadowed_fixtures(root: Path) -> list[str]:
    """One line per fixture that a conftest under `root` redefines from an enclosing one (paths
    relative to `root`)."""
    defined = {path.parent: fixture_names(path) for path in sorted(root.rglob("conftest.py"))}
    found: list[str] = []
    for folder, names in defined.items():
        for outer, outer_names in defined.items():
            if outer in folder.parents:
                found.extend(
                    f"{(folder / 'conftest.py').relative_to(root)} redefines fixture {name!r} of "
                    f"{(outer / 'conftest.py').relative_to(root)}"
                    for name in sorted(names & outer_names)
                )
    return found
