"""`python -m services.soulseek`: serve the soulseek module."""

from __future__ import annotations

from services.kit.module.runner import run_module
from services.soulseek.module import SPEC

raise SystemExit(run_module(SPEC))
