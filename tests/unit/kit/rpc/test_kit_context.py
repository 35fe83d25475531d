from __future__ import annotations

import pytest

from services.kit.rpc.context import (
    bind,
    child_traceparent,
    current_correlation_id,
    current_traceparent,
    format_traceparent,
    new_traceparent,
    parse_traceparent,
)

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_parse_and_format_round_trip() -> None:
    tp = parse_traceparent(VALID)
    assert tp is not None
    assert tp.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tp.span_id == "00f067aa0ba902b7"
    assert tp.sampled
    assert format_traceparent(tp) == VALID
    assert parse_traceparent(VALID.encode()) == tp


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        VALID + "-extra",  # version 00 has exactly four fields
    ],
)
def test_invalid_values_are_ignored(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_future_versions_keep_the_known_fields() -> None:
    tp = parse_traceparent("01" + VALID[2:] + "-what-comes-next")
    assert tp is not None
    assert format_traceparent(tp) == VALID


def test_new_and_child() -> None:
    root = new_traceparent()
    assert len(root.trace_id) == 32
    assert len(root.span_id) == 16
    child = root.child()
    assert child.trace_id == root.trace_id
    assert child.span_id != root.span_id
    assert not new_traceparent(sampled=False).sampled


def test_bind_sets_and_restores() -> None:
    root = new_traceparent()
    assert current_correlation_id() is None
    with bind("outer", root):
        assert current_correlation_id() == "outer"
        with bind("inner"):
            assert current_correlation_id() == "inner"
            assert current_traceparent() == root  # untouched by the nested bind
        assert current_correlation_id() == "outer"
        assert child_traceparent().trace_id == root.trace_id
    assert current_correlation_id() is None
    assert current_traceparent() is None
    assert child_traceparent().trace_id != root.trace_id  # no context: a new trace
