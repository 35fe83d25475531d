"""`python -m services.soulseek`: serve the soulseek module."""

from __future__ import annotations

import sys

from services.kit.module.runner import run_module
from services.soulseek.module import SPEC

if __name__ == "__main__":
    sys.exit(run_module(SPEC))
