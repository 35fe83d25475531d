"""Pieces of the NATS JetStream event store (`router.bus.jetstream_store`): reads and records."""

from __future__ import annotations
