"""The module side of the router's event bus: envelopes, publishing, subscribing, handlers, the in-
memory bus for tests, the event-type registry."""

from __future__ import annotations
