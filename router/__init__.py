"""The SoulSpot router: module registry, capability proxy, status and (elsewhere) the event bus."""

from __future__ import annotations
