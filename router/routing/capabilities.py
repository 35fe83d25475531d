"""The capability catalog, read from the generated descriptors (never a hand-written list).

Every RPC of every service in `soulspot.capabilities.v1` carries the
`(soulspot.options.v1.capability)` option; this module imports the generated modules (so their
descriptors sit in the default pool, which reflection reads too) and indexes them.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from google.protobuf import message_factory

from soulspot.options.v1 import options_pb2

if TYPE_CHECKING:
    from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
    from google.protobuf.message import Message

CAPABILITY_PACKAGE = "soulspot.capabilities.v1"


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One capability RPC."""

    capability: str
    method: str  # "/package.Service/Method"
    service: str  # "package.Service"
    idempotent: bool
    request_type: type[Message]
    response_type: type[Message]
    request_streaming: bool
    response_streaming: bool


@dataclass(slots=True)
class Catalog:
    """Capabilities by name, by method path and by service."""

    by_capability: dict[str, MethodSpec] = field(default_factory=dict)
    by_method: dict[str, MethodSpec] = field(default_factory=dict)
    services: dict[str, list[str]] = field(default_factory=dict)  # service -> capabilities

    def add(self, spec: MethodSpec) -> None:
        if spec.capability in self.by_capability:
            raise ValueError(f"capability {spec.capability} is declared twice")
        self.by_capability[spec.capability] = spec
        self.by_method[spec.method] = spec
        self.services.setdefault(spec.service, []).append(spec.capability)


def _spec(service: ServiceDescriptor, method: MethodDescriptor) -> MethodSpec | None:
    options = method.GetOptions()
    if not options.HasExtension(options_pb2.capability):
        return None
    option = options.Extensions[options_pb2.capability]
    if not option.name:
        return None
    return MethodSpec(
        capability=option.name,
        method=f"/{service.full_name}/{method.name}",
        service=service.full_name,
        idempotent=option.idempotent,
        request_type=message_factory.GetMessageClass(method.input_type),
        response_type=message_factory.GetMessageClass(method.output_type),
        request_streaming=method.client_streaming,
        response_streaming=method.server_streaming,
    )


def load_catalog(package: str = CAPABILITY_PACKAGE) -> Catalog:
    """Import every generated module of `package` and index its capability RPCs."""
    pkg = importlib.import_module(package)
    catalog = Catalog()
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        # Importing the _grpc module too keeps the stubs' descriptors loaded alongside.
        importlib.import_module(f"{package}.{info.name}_grpc")
        file_descriptor = module.DESCRIPTOR
        for service in file_descriptor.services_by_name.values():
            for method in cast("ServiceDescriptor", service).methods:
                spec = _spec(service, method)
                if spec is not None:
                    catalog.add(spec)
    return catalog
