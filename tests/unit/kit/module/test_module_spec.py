"""services.kit.module.spec: what a module declares about itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.kit.module.spec import Capability, ModuleParts, ModuleSection, ModuleSpec

if TYPE_CHECKING:
    from services.kit.module.runtime import ModuleRuntime


def build(runtime: ModuleRuntime[ModuleSection]) -> ModuleParts:
    return ModuleParts(services=[])


def test_capabilities_given_as_tuples_are_read_as_capabilities() -> None:
    spec = ModuleSpec(
        "demo",
        0,
        [Capability("search.track", 5), ("import.track", 10, ["metadata"])],
        build,
        ModuleSection,
    )
    assert spec.capability_list() == [
        Capability("search.track", 5),
        Capability("import.track", 10, ("metadata",)),
    ]
