"""The folder module: download.track from a configured source folder of audio files."""

from __future__ import annotations
