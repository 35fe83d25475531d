"""`python -m services.folder`: serve the folder module."""

from __future__ import annotations

from services.folder.module import SPEC
from services.kit.module.runner import run_module

raise SystemExit(run_module(SPEC))
