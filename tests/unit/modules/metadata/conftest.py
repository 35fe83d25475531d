"""Fixtures of the metadata module's unit tests: a MusicBrainz stand-in that knows one
recording, The Paper Lanterns - Harbour Lights (ISRC QZSS11900001)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.standins.musicbrainz import MusicBrainzStandin, StandinRecording

if TYPE_CHECKING:
    from collections.abc import Iterator

# The recording's MusicBrainz id; its release is "rel-" and this id.
HARBOUR_MBID = "9a1c2b3d-0000-4000-8000-000000000001"


@pytest.fixture
def musicbrainz() -> Iterator[MusicBrainzStandin]:
    standin = MusicBrainzStandin(
        [
            StandinRecording(
                HARBOUR_MBID,
                "Harbour Lights",
                "The Paper Lanterns",
                "Night Ferry",
                "2019-04-05",
                1,
                isrcs=["QZSS11900001"],
            )
        ]
    )
    standin.start()
    yield standin
    standin.stop()
