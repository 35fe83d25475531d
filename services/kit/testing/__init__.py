"""Helpers for tests, benchmarks and offline demos: generated sample audio."""

from __future__ import annotations
