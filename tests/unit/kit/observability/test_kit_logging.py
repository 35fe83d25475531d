from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import pytest

from services.kit.observability.logging import setup_logging
from services.kit.rpc.context import bind, new_traceparent

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root")
def test_json_lines_with_context_and_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("svc", "INFO")
    setup_logging("svc", "INFO")  # idempotent: one handler, one line
    tp = new_traceparent()
    log = logging.getLogger("kittest.logging")
    with bind("cid-1", tp):
        log.info("hello %s", "world", extra={"operation": "search.track", "impact": None})
    log.debug("below the level")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["msg"] == "hello world"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "kittest.logging"
    assert entry["service"] == "svc"
    assert entry["correlation_id"] == "cid-1"
    assert entry["trace_id"] == tp.trace_id
    assert entry["operation"] == "search.track"
    assert entry["impact"] is None
    assert entry["ts"].endswith("+00:00")


@pytest.mark.usefixtures("restore_root")
def test_exceptions_stay_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("svc")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("kittest").exception("failed")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "ValueError: boom" in json.loads(lines[0])["exc"]
    assert "correlation_id" not in json.loads(lines[0])  # no context, no field


@pytest.mark.usefixtures("restore_root")
def test_plain_text_mode(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("svc", "INFO", json_lines=False)
    logging.getLogger("kittest").warning("careful")
    assert "WARNING svc kittest: careful" in capsys.readouterr().err
