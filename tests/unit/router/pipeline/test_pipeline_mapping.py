"""The pipeline's request mapping language."""

from __future__ import annotations

from typing import Any

import pytest

from router.pipeline.mapping import MappingError, evaluate, parse_expression, validate_mapping

CONTEXT: dict[str, Any] = {
    "run_id": "r1",
    "track": {"title": "Harbour Lights", "artist": "The Paper Lanterns"},
    "file": {"path": "/downloads/a.flac", "size_bytes": "12"},
    "steps": {
        "enrich.metadata": {"file": {"path": "/downloads/a.flac", "checksum": "abc"}},
        "import.track": {"file": {"path": "/library/a.flac"}, "duplicate": False},
    },
}


def test_plain_path() -> None:
    assert evaluate("$.track.title", CONTEXT) == "Harbour Lights"
    assert evaluate("$.run_id", CONTEXT) == "r1"


def test_dotted_step_ids_resolve_longest_key_first() -> None:
    assert evaluate("$.steps.enrich.metadata.file.checksum", CONTEXT) == "abc"
    assert evaluate("$.steps.import.track.file", CONTEXT) == {"path": "/library/a.flac"}


def test_fallback_chain_takes_the_first_value_that_is_set() -> None:
    assert evaluate("$.steps.missing.file | $.file.path", CONTEXT) == "/downloads/a.flac"
    assert evaluate("$.track.album | 'Singles'", CONTEXT) == "Singles"
    assert evaluate("$.track.album | $.track.genre", CONTEXT) is None


def test_empty_values_count_as_absent() -> None:
    context = {"a": "", "b": {}, "c": "x"}
    assert evaluate("$.a | $.b | $.c", context) == "x"


def test_nested_mapping_leaves_out_unresolved_keys() -> None:
    mapping = {
        "track": "$.track",
        "file": "$.steps.import.track.file | $.file",
        "offline": True,
        "genre": "$.track.genre",
        "tags": ["$.track.title", "$.nothing"],
    }
    assert evaluate(mapping, CONTEXT) == {
        "track": CONTEXT["track"],
        "file": {"path": "/library/a.flac"},
        "offline": True,
        "tags": ["Harbour Lights"],
    }


def test_strings_without_dollar_are_literals() -> None:
    assert evaluate({"channel": "log"}, CONTEXT) == {"channel": "log"}


def test_path_through_a_scalar_is_absent() -> None:
    assert evaluate("$.run_id.more", CONTEXT) is None


def test_whole_context() -> None:
    assert evaluate("$", {"a": 1}) == {"a": 1}


@pytest.mark.parametrize(
    "bad",
    ["$.", "$.a..b", "$track", "$.a | ", "$.a | 'x' | $.b", "$.a | 'open", "$.a b"],
)
def test_malformed_expressions_are_refused(bad: str) -> None:
    with pytest.raises(MappingError):
        parse_expression(bad)


def test_validate_names_where_the_error_is() -> None:
    with pytest.raises(MappingError, match=r"steps\[0\]\.request\.file"):
        validate_mapping({"track": "$.track", "file": "$.a..b"}, "steps[0].request")
