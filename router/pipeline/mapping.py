"""The pipeline's request mapping language: how a step's request is built from the run.

A run's context is a JSON-like tree (protobuf messages as dicts, proto field names):

    {"run_id": ..., "download_id": ..., "source": ..., "requested_by": ...,
     "track": {...}, "file": {...},
     "steps": {"enrich.metadata": {...response...}, "import.track": {...}}}

A mapping is a YAML value where

* a string starting with ``$`` is an expression: one or more paths separated by ``|``; the
  first path that resolves to a non-empty value wins (a fallback chain). A path is ``$``
  followed by ``.name`` segments. Step results are keyed by the step id, which usually
  contains dots itself ("enrich.metadata"): at each level the longest key made of the next
  segments joined by dots wins, so ``$.steps.enrich.metadata.file`` reads
  ``steps["enrich.metadata"]["file"]``. A chain may end in a literal instead of a path
  (``$.track.album | 'Singles'``, quotes required).
* a mapping (dict) builds a nested object, each value mapped the same way; keys whose value
  resolves to nothing are left out;
* a list maps each item; anything else (a number, a bool, a string without ``$``) is itself.

An expression that resolves to nothing gives None, which leaves the request field unset.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MappingError", "evaluate", "parse_expression", "resolve_path", "validate_mapping"]

_MISSING: Any = None  # what an unresolved path gives: leaves the request field unset


class MappingError(ValueError):
    """A malformed expression in a pipeline file."""


def _is_empty(value: Any) -> bool:
    # proto3 leaves defaults out of the dict form; an explicit empty value counts as absent too,
    # so a fallback chain moves on past "" or {}.
    return value is None or value == "" or value == {} or value == []


def parse_expression(expression: str) -> list[tuple[str, Any]]:
    """Split ``$.a | $.b | 'lit'`` into [("path", ["a"]), ("path", ["b"]), ("literal", "lit")]."""
    if not expression.startswith("$"):
        raise MappingError(f"not an expression (must start with '$'): {expression!r}")
    parts: list[tuple[str, Any]] = []
    for raw in expression.split("|"):
        alt = raw.strip()
        if not alt:
            raise MappingError(f"empty alternative in {expression!r}")
        if alt[0] in "'\"":
            if len(alt) < 2 or alt[-1] != alt[0]:
                raise MappingError(f"unterminated literal {alt!r} in {expression!r}")
            parts.append(("literal", alt[1:-1]))
            continue
        if alt == "$":
            parts.append(("path", []))
            continue
        if not alt.startswith("$."):
            raise MappingError(f"a path starts with '$.': {alt!r} in {expression!r}")
        segments = alt[2:].split(".")
        if any(not s or not (s.replace("_", "").replace("-", "").isalnum()) for s in segments):
            raise MappingError(f"bad path {alt!r} in {expression!r}")
        parts.append(("path", segments))
    if any(kind == "literal" for kind, _ in parts[:-1]):
        raise MappingError(f"a literal can only end a chain: {expression!r}")
    return parts


def resolve_path(root: Any, segments: list[str]) -> Any:
    """The value at `segments` under `root`, longest dotted key first; None when absent."""
    if not segments:
        return root
    if not isinstance(root, dict):
        return _MISSING
    for take in range(len(segments), 0, -1):
        key = ".".join(segments[:take])
        if key in root:
            found = resolve_path(root[key], segments[take:])
            if not _is_empty(found):
                return found
    return _MISSING


def evaluate(mapping: Any, context: dict[str, Any]) -> Any:
    """The value `mapping` describes, read from `context`."""
    if isinstance(mapping, str) and mapping.startswith("$"):
        for kind, value in parse_expression(mapping):
            found = value if kind == "literal" else resolve_path(context, value)
            if not _is_empty(found):
                return found
        return _MISSING
    if isinstance(mapping, dict):
        out: dict[str, Any] = {}
        for key, sub in mapping.items():
            value = evaluate(sub, context)
            if not _is_empty(value):
                out[str(key)] = value
        return out
    if isinstance(mapping, list):
        return [v for v in (evaluate(item, context) for item in mapping) if not _is_empty(v)]
    return mapping


def validate_mapping(mapping: Any, where: str) -> None:
    """Parse every expression in `mapping` so a bad pipeline file fails at start-up."""
    if isinstance(mapping, str) and mapping.startswith("$"):
        try:
            parse_expression(mapping)
        except MappingError as err:
            raise MappingError(f"{where}: {err}") from None
    elif isinstance(mapping, dict):
        for key, sub in mapping.items():
            validate_mapping(sub, f"{where}.{key}")
    elif isinstance(mapping, list):
        for index, item in enumerate(mapping):
            validate_mapping(item, f"{where}[{index}]")
