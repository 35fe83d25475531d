from __future__ import annotations

import asyncio

import pytest

from services.kit.support import eventloop
from services.kit.support.settings import ProcessSettings


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_default_is_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOULSPOT_EVENT_LOOP", raising=False)
    assert eventloop.selected_loop() == "uvloop"
    monkeypatch.setenv("SOULSPOT_EVENT_LOOP", " UVLoop ")
    assert eventloop.selected_loop() == "uvloop"
    assert eventloop.selected_loop(ProcessSettings(event_loop="asyncio")) == "asyncio"


def test_unknown_loop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULSPOT_EVENT_LOOP", "trio")
    with pytest.raises(ValueError, match="SOULSPOT_EVENT_LOOP='trio'"):
        eventloop.selected_loop()


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
