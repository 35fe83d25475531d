"""MusicBrainzClient waits through the kit's backoff between 503 answers: its waits double."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from services.kit.support.backoff import BackoffPolicy
from services.metadata.musicbrainz_api import MusicBrainzClient
from tests.helpers.recorded_waits import RecordedWaits, assert_follows
from tests.standins.musicbrainz import MusicBrainzStandin, StandinRecording

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def standin() -> Iterator[MusicBrainzStandin]:
    server = MusicBrainzStandin(
        [
            StandinRecording(
                mbid="mb-1",
                title="T",
                artist="A",
                album="B",
                date="2020",
                track_number=1,
                isrcs=["QZSS11900001"],
            )
        ]
    )
    server.start()
    yield server
    server.stop()


async def test_waits_double_between_503_answers(
    standin: MusicBrainzStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = RecordedWaits.install(monkeypatch, wanted=100)
    standin.fail_next(3)
    client = MusicBrainzClient(
        standin.base_url, min_interval_s=0.0, backoff_base_s=0.5, max_retries=3
    )
    async with client:
        result = await client.lookup(isrc="QZSS11900001")
    assert result.status == "found"
    assert recorded.waits == [0.5, 1.0, 2.0]
    assert_follows(recorded.waits, BackoffPolicy(initial_s=0.5, cap_s=30.0, jitter="none"))
