"""`soulspot up`'s log reading (cli/up/logs.py): the last NOT_SERVING reason and the tail."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

from cli.up.logs import log_tail, logged_reason


def test_logged_reason_is_the_last_not_serving(tmp_path: Path) -> None:
    log = tmp_path / "m.log"
    lines = [
        "plain text line",
        json.dumps({"msg": "not serving", "status": "NOT_SERVING", "reason": "old"}),
        json.dumps({"msg": "not serving", "status": "NOT_SERVING", "reason": "no credentials"}),
        '{"broken json "reason"',
    ]
    log.write_text("\n".join(lines) + "\n")
    assert logged_reason(log) == "no credentials"
    with log.open("a") as f:
        f.write(json.dumps({"msg": "serving", "reason": ""}) + "\n")
    assert logged_reason(log) == ""
    assert logged_reason(tmp_path / "missing.log") == ""


def test_log_tail_is_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "m.log"
    log.write_text("".join(f"line {n}\n" for n in range(1, 31)))
    assert log_tail(log, 2) == "line 29\nline 30"
    assert log_tail(log).splitlines()[0] == "line 11"  # 20 lines by default
    assert log_tail(tmp_path / "missing.log") == ""
