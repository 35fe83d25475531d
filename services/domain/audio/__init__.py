"""Audio files: reading their properties and tags under one spelling."""

from __future__ import annotations
