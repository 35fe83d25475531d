"""`python -m services.spotify`: serve the spotify module."""

from __future__ import annotations

import sys

from services.kit.module.runner import run_module
from services.spotify.module import SPEC

if __name__ == "__main__":
    sys.exit(run_module(SPEC))
