"""The `soulspot` commands, one file each; cli/main.py mounts them."""

from __future__ import annotations
