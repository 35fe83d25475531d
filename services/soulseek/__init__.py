"""The soulseek module: download.track (priority 10) through a Soulseek daemon (slskd)."""

from __future__ import annotations
