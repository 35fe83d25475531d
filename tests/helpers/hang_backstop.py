"""Ends the run, with every thread's stack, when a test outlives its timeout several times
over, so that a hang nothing else can interrupt fails the run instead of holding it forever.

pytest-timeout (the signal method) raises its failure once per test, from one SIGALRM: the
hung step fails and the test goes on to its teardown. The event loop fixture's teardown then
cancels whatever tasks the test left and waits for them with no bound; a task that does not
end there (one that swallowed its cancellation) would hang the run with no alarm left to
fire. So each test's whole run (setup, call, teardown) is also watched from a thread: past
BACKSTOP_FACTOR times its timeout, the captured output and every thread's stack go to the
terminal and the process exits with status 1, as pytest-timeout's thread method does.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Generator

# How many of its timeouts a test may take in all before the run is ended.
BACKSTOP_FACTOR = 3


def _timeout_s(item: pytest.Item) -> float:
    """The test's pytest-timeout: its marker's, else the configured one (0: none)."""
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
        if value is not None:
            return float(value)
    try:
        configured = item.config.getini("timeout")
    except ValueError:  # pytest-timeout is not installed
        return 0.0
    return float(configured or 0)


def _end_run(item: pytest.Item, after_s: float) -> None:
    capman = item.config.pluginmanager.getplugin("capturemanager")
    try:
        if capman is not None:
            capman.suspend_global_capture(in_=True)
            out, err = capman.read_global_capture()
            sys.stderr.write(out + err)
        terminal = item.config.get_terminal_writer()
        terminal.sep("+", f"{item.nodeid} still running after {after_s:g}s: ending the run")
        terminal.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    limit = BACKSTOP_FACTOR * _timeout_s(item)
    watchdog: threading.Timer | None = None
    if limit > 0:
        watchdog = threading.Timer(limit, _end_run, (item, limit))
        watchdog.name = f"hang backstop {item.nodeid}"
        watchdog.daemon = True
        watchdog.start()
    try:
        return (yield)
    finally:
        if watchdog is not None:
            watchdog.cancel()
