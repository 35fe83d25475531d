from __future__ import annotations

import asyncio

import pytest

from services.kit.support import eventloop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_default_is_uvloop() -> None:
    assert eventloop.selected_loop({}) == "uvloop"
    assert eventloop.selected_loop({"SOULSPOT_EVENT_LOOP": " UVLoop "}) == "uvloop"


def test_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="SOULSPOT_EVENT_LOOP='trio'"):
        eventloop.selected_loop({"SOULSPOT_EVENT_LOOP": "trio"})


def test_run_uses_the_selected_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULSPOT_EVENT_LOOP", "asyncio")
    assert eventloop.run(_loop_module()).startswith("asyncio")
    monkeypatch.setenv("SOULSPOT_EVENT_LOOP", "uvloop")
    assert eventloop.run(_loop_module()) == "uvloop"


def test_bad_setting_fails_before_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULSPOT_EVENT_LOOP", "nope")
    ran: list[bool] = []

    async def main() -> None:
        ran.append(True)

    with pytest.raises(ValueError, match="expected one of asyncio, uvloop"):
        eventloop.run(main())
    assert ran == []
