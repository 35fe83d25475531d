"""Warnings about capabilities nobody can serve: one log line per outage, not per call."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from services.kit.support.timestamps import timestamp_at
from soulspot.router.v1 import router_pb2

log = logging.getLogger("soulspot.router.warnings")


@dataclass(frozen=True, slots=True)
class CapabilityWarning:
    module: str
    operation: str
    status: str
    impact: str
    action: str
    raised_at: float

    def to_proto(self) -> router_pb2.Warning:
        ts = timestamp_at(self.raised_at)
        return router_pb2.Warning(
            module=self.module,
            operation=self.operation,
            status=self.status,
            impact=self.impact,
            action=self.action,
            raised_at=ts,
        )


class WarningBoard:
    """The current warnings, one per capability. Raising an already raised warning does
    nothing; clearing it (the capability recovered) lets the next outage log again."""

    def __init__(self) -> None:
        self._active: dict[str, CapabilityWarning] = {}

    def raise_unavailable(self, capability: str, modules: str, status: str) -> bool:
        """Record (and log once) that `capability` has no routable module. True when new."""
        if capability in self._active:
            return False
        warning = CapabilityWarning(
            module=modules or "none",
            operation=capability,
            status=status or "missing",
            impact=f"calls needing {capability} fail until a module serving it is healthy",
            action=(
                f"start or repair a module that serves {capability}"
                if modules
                else f"start a module that serves {capability} (none is registered)"
            ),
            raised_at=time.time(),
        )
        self._active[capability] = warning
        fields = {
            "module": warning.module,
            "operation": warning.operation,
            "status": warning.status,
            "impact": warning.impact,
            "action": warning.action,
        }
        # LogRecord reserves "module": the kit's formatter writes `module_name` as "module".
        log.warning(
            "no healthy module for %s",
            capability,
            extra={"module_name" if k == "module" else k: v for k, v in fields.items()},
        )
        return True

    def clear(self, capability: str) -> None:
        if self._active.pop(capability, None) is not None:
            log.info(
                "capability %s is available again",
                capability,
                extra={"operation": capability, "status": "recovered"},
            )

    def is_raised(self, capability: str) -> bool:
        return capability in self._active

    def current(self) -> list[CapabilityWarning]:
        return list(self._active.values())
