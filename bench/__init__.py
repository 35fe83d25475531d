"""Benchmarks that print ratios against peers; `python -m bench` runs them all."""

from __future__ import annotations
