"""`python -m services.notifications`: serve the notifications module."""

from __future__ import annotations

import sys

from services.kit.module.runner import run_module
from services.notifications.module import SPEC

if __name__ == "__main__":
    sys.exit(run_module(SPEC))
