"""Domain code several modules share (audio files, track matching, download bookkeeping). Modules
may import it; it imports only gen/ and the kit."""

from __future__ import annotations
