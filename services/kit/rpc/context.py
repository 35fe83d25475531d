"""Per-call context: the correlation id and the W3C trace context of the current task.

Both live in contextvars so every coroutine of one RPC (and the calls it makes) sees them
without passing them around, while concurrent RPCs on the same loop stay apart.
"""

from __future__ import annotations

import random
import re
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

# Metadata keys. gRPC metadata keys are lower-case ASCII.
CORRELATION_ID_KEY = "x-correlation-id"
TRACEPARENT_KEY = "traceparent"
# Router metadata: response keys say who answered and how; request keys steer routing.
MODULE_KEY = "x-soulspot-module"
ATTEMPTS_KEY = "x-soulspot-attempts"
NO_FALLBACK_KEY = "x-soulspot-no-fallback"
TARGET_MODULE_KEY = "x-soulspot-target-module"

_SAMPLED = 0x01


def metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | None:
    """The first value of `key` as text, or None (also for an empty value)."""
    for k, v in metadata or ():
        if k == key:
            text = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            return text or None
    return None


_TRACEPARENT_RE = re.compile(
    r"^(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<span_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-.*)?$"
)


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed W3C `traceparent` (always emitted as version 00)."""

    trace_id: str
    span_id: str
    flags: int = _SAMPLED

    @property
    def sampled(self) -> bool:
        return bool(self.flags & _SAMPLED)

    def child(self) -> TraceParent:
        """A new span in the same trace, for a call made on behalf of this span."""
        return TraceParent(self.trace_id, _span_id(), self.flags)

    def __str__(self) -> str:
        return format_traceparent(self)


# Ids need to be unique, not secret: like OpenTelemetry's RandomIdGenerator, they come from
# the `random` module (reseeded in a forked child), which costs no system call per id as
# secrets and uuid4 do, on every call the mesh serves. Zero is not a valid id.
def _hex_id(bits: int) -> str:
    value = 0
    while not value:
        value = random.getrandbits(bits)
    return f"{value:0{bits // 4}x}"


def _span_id() -> str:
    return _hex_id(64)


def new_traceparent(*, sampled: bool = True) -> TraceParent:
    """The root span of a new trace."""
    return TraceParent(_hex_id(128), _hex_id(64), _SAMPLED if sampled else 0)


def parse_traceparent(value: str | bytes | None) -> TraceParent | None:
    """Parse a header value; None for anything the W3C spec says to ignore."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    match = _TRACEPARENT_RE.match(value.strip())
    if match is None:
        return None
    version = match["version"]
    # Version ff is forbidden; version 00 has exactly four parts; later versions may append
    # fields that a 00 parser keeps ignoring (forward compatibility per the spec).
    if version == "ff" or (version == "00" and match["rest"]):
        return None
    trace_id, span_id = match["trace_id"], match["span_id"]
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceParent(trace_id, span_id, int(match["flags"], 16))


def format_traceparent(tp: TraceParent) -> str:
    return f"00-{tp.trace_id}-{tp.span_id}-{tp.flags:02x}"


def new_correlation_id() -> str:
    """32 hex digits, the shape of a uuid4's hex form."""
    return _hex_id(128)


correlation_id_var: ContextVar[str | None] = ContextVar("soulspot_correlation_id", default=None)
traceparent_var: ContextVar[TraceParent | None] = ContextVar("soulspot_traceparent", default=None)


def current_correlation_id() -> str | None:
    return correlation_id_var.get()


def current_traceparent() -> TraceParent | None:
    return traceparent_var.get()


def current_trace_id() -> str | None:
    tp = traceparent_var.get()
    return tp.trace_id if tp is not None else None


def child_traceparent() -> TraceParent:
    """The traceparent for an outgoing call: a child of the current span, or a new trace."""
    tp = traceparent_var.get()
    return tp.child() if tp is not None else new_traceparent()


@contextmanager
def bind(
    correlation_id: str | None = None, traceparent: TraceParent | None = None
) -> Iterator[None]:
    """Set the correlation id and/or traceparent for a block, restoring them afterwards.

    Arguments left as None keep the current value, so a nested bind only overrides what it names.
    """
    cid_token = correlation_id_var.set(correlation_id) if correlation_id is not None else None
    tp_token = traceparent_var.set(traceparent) if traceparent is not None else None
    try:
        yield
    finally:
        # An async generator that is finalized by the event loop (not exhausted by its own
        # task) exits in another Context, where reset() refuses these tokens; that Context
        # is thrown away anyway, so there is nothing to restore.
        with suppress(ValueError):
            if tp_token is not None:
                traceparent_var.reset(tp_token)
            if cid_token is not None:
                correlation_id_var.reset(cid_token)
