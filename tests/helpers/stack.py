"""What the `soulspot up` end-to-end tests share: a free block of ports, and /proc views of
the processes `up` starts."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterable


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_offset(ports: Iterable[int], lowest: int, highest: int) -> int:
    """A --port-offset in [lowest, highest) that moves every default port to a free one (the
    stack's ports shift as one block, clear of other tests)."""
    wanted = tuple(ports)
    for _ in range(50):
        offset = random.randrange(lowest, highest, 10)
        if all(_port_free(p + offset) for p in wanted):
            return offset
    pytest.fail("no free block of ports for the stack")


def child_pids(pid: int) -> set[int]:
    """The process's children, from every one of its threads."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent's wait() counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
