"""`python -m services.catalog`: serve the catalog module."""

from __future__ import annotations

import sys

from services.catalog.module import SPEC
from services.kit.module.runner import run_module

if __name__ == "__main__":
    sys.exit(run_module(SPEC))
