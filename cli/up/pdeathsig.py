"""Exec a command that gets SIGTERM when the process that started it dies (Linux).

    python cli/up/pdeathsig.py <parent pid> -- <command> [args...]

`soulspot up` starts every service through this, so a SIGKILLed `up` (which cannot stop its
children itself) does not leave the router and modules running. The death signal is set with
prctl(PR_SET_PDEATHSIG) and survives the exec, so the service keeps the pid `up` knows.

Why a wrapper process and not `preexec_fn`: preexec_fn runs Python between fork and exec in a
copy of a process that has other threads (asyncio.to_thread workers, gRPC's own threads);
a lock one of them held at fork time (malloc, the import lock, logging) stays locked forever
in the child, which can hang it. Here the prctl runs in a fresh, single-threaded interpreter.

The race: if the parent died before prctl ran, no signal will ever come, so the wrapper checks
that its parent is still the one given on the command line and exits instead of exec'ing.

Only the standard library: it runs with `-I -S`, before anything of the project is importable.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
# The exit code when the parent was already gone: the command never ran.
PARENT_GONE = 75
USAGE = 2


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """prctl(PR_SET_PDEATHSIG, sig) for this process; OSError when the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def main(args: list[str]) -> int:
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        print("usage: pdeathsig.py <parent pid> -- <command> [args...]", file=sys.stderr)
        return USAGE
    parent, command = int(args[0]), args[2:]
    try:
        set_parent_death_signal()
    except OSError as err:
        # Run it anyway, as without prctl: `up` still stops it on Ctrl-C / SIGTERM.
        print(f"pdeathsig: prctl failed ({err}); not tied to the parent", file=sys.stderr)
    if os.getppid() != parent:
        # Reparented before prctl took effect: the parent is gone and would never signal.
        return PARENT_GONE
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as err:
        print(f"pdeathsig: cannot run {command[0]}: {err}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
