"""Routing capability calls: the registry, health watching, breakers, the routing table, the proxy,
warnings and status."""

from __future__ import annotations
