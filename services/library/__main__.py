"""`python -m services.library`: serve the library module."""

from __future__ import annotations

import sys

from services.kit.module.runner import run_module
from services.library.module import SPEC

if __name__ == "__main__":
    sys.exit(run_module(SPEC))
