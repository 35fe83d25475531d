"""The event-type registry, discovered from the generated descriptors.

Every message in a `soulspot.events.vN` package that carries the `(soulspot.options.v1.event)`
option is an event payload. Nothing here is a hand-kept list: a new event message in the
contracts is known to the bus as soon as its module is generated.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from google.protobuf import message_factory

from soulspot.options.v1 import options_pb2

if TYPE_CHECKING:
    from google.protobuf.descriptor import Descriptor, FileDescriptor
    from google.protobuf.message import Message

EVENTS_PACKAGE = "soulspot.events"
TYPE_URL_PREFIX = "type.googleapis.com/"
_VERSION_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_PACKAGE_MAJOR_RE = re.compile(r"^v(\d+)$")


@dataclass(frozen=True, slots=True)
class EventSchema:
    """One registered event payload: its type, version and message class."""

    event_type: str
    version: str
    major: int
    full_name: str
    message_class: type[Message]
    # Who the contract says publishes it: module names, "router", "cli".
    producers: tuple[str, ...] = ()

    @property
    def type_url(self) -> str:
        return TYPE_URL_PREFIX + self.full_name


@functools.lru_cache(maxsize=256)  # parsed for every published event
def parse_version(version: str) -> tuple[int, int, int] | None:
    """MAJOR.MINOR.PATCH as ints, or None when it is not a semantic version."""
    match = _VERSION_RE.match(version)
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3])


def event_option(descriptor: Descriptor) -> options_pb2.EventOptions | None:
    """The message's event option, or None when it is not an event payload."""
    options = descriptor.GetOptions()
    if not options.HasExtension(options_pb2.event):
        return None
    return options.Extensions[options_pb2.event]


class EventRegistry:
    """Maps (event_type, MAJOR) to the payload message registered for it."""

    def __init__(self, schemas: list[EventSchema]) -> None:
        self._by_key: dict[tuple[str, int], EventSchema] = {}
        for schema in schemas:
            key = (schema.event_type, schema.major)
            if key in self._by_key and self._by_key[key].full_name != schema.full_name:
                raise ValueError(
                    f"event type {schema.event_type} v{schema.major} is declared twice: "
                    f"{self._by_key[key].full_name} and {schema.full_name}"
                )
            self._by_key[key] = schema
        self._types = frozenset(t for t, _ in self._by_key)
        self._by_name = {s.full_name: s.message_class for s in self._by_key.values()}

    @classmethod
    def discover(cls) -> EventRegistry:
        """Import every generated module under soulspot.events and read their options."""
        return cls(list(_discover()))

    def get(self, event_type: str, major: int) -> EventSchema | None:
        return self._by_key.get((event_type, major))

    def knows(self, event_type: str) -> bool:
        return event_type in self._types

    def majors(self, event_type: str) -> list[int]:
        return sorted(m for t, m in self._by_key if t == event_type)

    @property
    def event_types(self) -> frozenset[str]:
        return self._types

    def schemas(self) -> list[EventSchema]:
        return list(self._by_key.values())

    def message_class(self, full_name: str) -> type[Message] | None:
        """The payload class for a message's full name, e.g. from an Any's type URL."""
        return self._by_name.get(full_name)


@functools.cache
def default_registry() -> EventRegistry:
    """Every event of the generated contracts, discovered once per process."""
    return EventRegistry.discover()


def _discover() -> list[EventSchema]:
    package = importlib.import_module(EVENTS_PACKAGE)
    schemas: list[EventSchema] = []
    seen: set[str] = set()
    # Real directories only: an editable install adds placeholder entries to the path.
    roots = sorted({str(p) for p in package.__path__ if Path(p).is_dir()})
    for root in roots:
        for version_dir in sorted(Path(root).iterdir()):
            major_match = _PACKAGE_MAJOR_RE.match(version_dir.name)
            if major_match is None or not version_dir.is_dir():
                continue
            package_major = int(major_match[1])
            for source in sorted(version_dir.glob("*_pb2.py")):
                module_name = f"{EVENTS_PACKAGE}.{version_dir.name}.{source.stem}"
                if module_name in seen:
                    continue
                seen.add(module_name)
                module = importlib.import_module(module_name)
                file_descriptor = cast("FileDescriptor", module.DESCRIPTOR)
                schemas.extend(_schemas_of(file_descriptor, package_major))
    return schemas


def _schemas_of(file_descriptor: FileDescriptor, package_major: int) -> list[EventSchema]:
    out: list[EventSchema] = []
    for descriptor in file_descriptor.message_types_by_name.values():
        option = event_option(descriptor)
        if option is None or not option.event_type:
            continue
        parsed = parse_version(option.version)
        if parsed is None:
            raise ValueError(
                f"{descriptor.full_name}: event version {option.version!r} is not semver"
            )
        if parsed[0] != package_major:
            raise ValueError(
                f"{descriptor.full_name}: version {option.version} does not match package "
                f"v{package_major}"
            )
        out.append(
            EventSchema(
                event_type=option.event_type,
                version=option.version,
                major=parsed[0],
                full_name=descriptor.full_name,
                message_class=message_factory.GetMessageClass(descriptor),
                producers=tuple(option.producers),
            )
        )
    return out
