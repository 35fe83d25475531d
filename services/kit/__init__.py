"""What every module, the router and the CLI share, in subpackages by job: rpc (gRPC plumbing),
observability (logs, metrics, spans), events (the event client), module (the module runtime),
support (settings, event loop, SQLite, retries), testing (sample audio)."""

from __future__ import annotations
