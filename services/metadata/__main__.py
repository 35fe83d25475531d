"""`python -m services.metadata`: serve the metadata module."""

from __future__ import annotations

import sys

from services.kit.module.runner import run_module
from services.metadata.module import SPEC

if __name__ == "__main__":
    sys.exit(run_module(SPEC))
