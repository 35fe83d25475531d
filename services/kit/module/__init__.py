"""What makes a process a module: its spec, the runtime typed by its settings section, registration
with the router, backend probes."""

from __future__ import annotations
