"""`python -m services.catalog`: serve the catalog module."""

from __future__ import annotations

from services.catalog.module import SPEC
from services.kit.module.runner import run_module

raise SystemExit(run_module(SPEC))
