"""`python -m services.folder`: serve the folder module."""

from __future__ import annotations

import sys

from services.folder.module import SPEC
from services.kit.module.runner import run_module

if __name__ == "__main__":
    sys.exit(run_module(SPEC))
