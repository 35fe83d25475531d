"""JSON-lines logging to stderr, one object per record, with the call context attached."""

from __future__ import annotations

import json
import logging
import math
import sys
from datetime import UTC, datetime

from services.kit.rpc import context

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


# LogRecord reserves `module` (the Python source module), but the mesh's structured warnings
# speak of the mesh module concerned: callers pass `extra={"module_name": ...}` and the line
# says "module".
_RENAMED = {"module_name": "module"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: fixed keys first, then `extra=` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        # (whole second, its text): one pair, replaced whole, so threads logging at once
        # never see one second's number with another's text.
        self._second: tuple[int, str] = (-1, "")

    def _timestamp(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond, as datetime.isoformat would write it.

        Formatting a datetime for every line is a good part of a line's cost, and every
        access line pays it; the text of the whole second changes once a second.
        """
        # Rounded the way datetime.fromtimestamp rounds: the fraction alone, half to even.
        fraction, whole = math.modf(created)
        seconds, micros = divmod(int(whole) * 1_000_000 + round(fraction * 1_000_000), 1_000_000)
        cached = self._second
        if cached[0] != seconds:
            text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            cached = self._second = (seconds, text)
        return f"{cached[1]}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "service": self.service,
        }
        correlation_id = context.current_correlation_id()
        if correlation_id is not None:
            entry["correlation_id"] = correlation_id
        trace_id = context.current_trace_id()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[_RENAMED.get(key, key)] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a stray non-JSON value in `extra=` must not lose the whole line.
        return json.dumps(entry, default=str, ensure_ascii=False)


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at emit time, so redirection (and pytest capture)
    applied after setup still sees the lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def setup_logging(service_name: str, level: str | int = "INFO", *, json_lines: bool = True) -> None:
    """Route all logging to stderr as JSON lines tagged with `service_name`.

    Idempotent: calling it again replaces the handler it installed before instead of
    stacking a second one (which would print every line twice).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    handler = _StderrHandler()
    if json_lines:
        handler.setFormatter(JsonFormatter(service_name))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {service_name} %(name)s: %(message)s")
        )
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
