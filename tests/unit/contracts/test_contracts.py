"""The contracts keep their own rules: every event declares itself, every capability RPC is
tagged, versions agree with packages, required fields are marked."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from google.api import field_behavior_pb2

import soulspot
from soulspot.options.v1 import options_pb2

if TYPE_CHECKING:
    from collections.abc import Iterator

    from google.protobuf import descriptor

SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
EVENT_TYPE = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")
CAPABILITY = re.compile(r"^[a-z_]+\.[a-z_]+$")

# Every event type the design names must exist.
DESIGN_EVENTS = {
    "download.started",
    "download.progress",
    "download.completed",
    "download.failed",
    "download.completed.for_source",
    "metadata.enriched",
    "track.imported",
    "track.ready",
    "pipeline.step_skipped",
    "playlist.sync_requested",
    "module.status_changed",
}
DESIGN_CAPABILITIES = {
    "search.track",
    "download.track",
    "enrich.metadata",
    "import.track",
    "notify.track_ready",
    "playlist.tracks",
    "library.check_downloaded",
}


def _files() -> Iterator[descriptor.FileDescriptor]:
    # The generated tree has no __init__.py files (namespace packages), so walk the folders.
    for root in soulspot.__path__:
        for path in sorted(Path(root).rglob("*_pb2.py")):
            module = ".".join(("soulspot", *path.relative_to(root).with_suffix("").parts))
            yield importlib.import_module(module).DESCRIPTOR


def _events() -> dict[str, descriptor.Descriptor]:
    found: dict[str, descriptor.Descriptor] = {}
    for f in _files():
        for msg in f.message_types_by_name.values():
            opts = msg.GetOptions()
            if opts.HasExtension(options_pb2.event):
                event_type = opts.Extensions[options_pb2.event].event_type
                assert event_type not in found, f"{event_type} declared twice"
                found[event_type] = msg
    return found


def test_every_design_event_is_declared() -> None:
    assert set(_events()) >= DESIGN_EVENTS


@pytest.mark.parametrize("event_type", sorted(_events()))
def test_event_option_is_complete_and_matches_package(event_type: str) -> None:
    msg = _events()[event_type]
    opt = msg.GetOptions().Extensions[options_pb2.event]
    assert EVENT_TYPE.match(opt.event_type)
    version = SEMVER.match(opt.version)
    assert version, f"{msg.full_name}: version {opt.version!r} is not MAJOR.MINOR.PATCH"
    package_major = msg.file.package.rsplit(".v", 1)[1]
    assert version.group(1) == package_major, f"{msg.full_name}: MAJOR differs from package"
    assert opt.producers, f"{msg.full_name} names no producer"
    assert opt.consumers, f"{msg.full_name} names no consumer"


def test_every_capability_method_is_tagged() -> None:
    seen: set[str] = set()
    for f in _files():
        if not f.package.startswith("soulspot.capabilities."):
            continue
        for service in f.services_by_name.values():
            for method in service.methods:
                opts = method.GetOptions()
                assert opts.HasExtension(options_pb2.capability), method.full_name
                name = opts.Extensions[options_pb2.capability].name
                assert CAPABILITY.match(name), f"{method.full_name}: bad capability {name!r}"
                assert name not in seen, f"capability {name} tagged twice"
                seen.add(name)
    assert seen >= DESIGN_CAPABILITIES


def test_references_mark_required_fields() -> None:
    from soulspot.common.v1 import references_pb2

    def required(msg: descriptor.Descriptor) -> set[str]:
        return {
            f.name
            for f in msg.fields
            if field_behavior_pb2.REQUIRED
            in f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
        }

    assert required(references_pb2.TrackReference.DESCRIPTOR) == {"title", "artist"}
    assert required(references_pb2.FileReference.DESCRIPTOR) == {"path"}
