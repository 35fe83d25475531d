"""MusicBrainzClient against the MusicBrainz stand-in."""

from __future__ import annotations

import asyncio
import itertools
import socket
from typing import TYPE_CHECKING, Any

import pytest

from services.metadata.musicbrainz_api import (
    DEFAULT_USER_AGENT,
    MusicBrainzClient,
    build_recording_query,
)
from tests.standins.musicbrainz import MusicBrainzStandin, StandinRecording

if TYPE_CHECKING:
    from collections.abc import Iterator

RECORDINGS = [
    StandinRecording(
        mbid="mb-harbour",
        title="Harbour Lights",
        artist="The Paper Lanterns",
        album="Night Ferry",
        date="2019-03-01",
        track_number=1,
        isrcs=["QZSS11900001"],
    ),
    StandinRecording(
        mbid="mb-quote",
        title='The "Quoted" Song',
        artist="Ostara Vale",
        album="Feral Gardens",
        date="2023",
        track_number=5,
    ),
]


@pytest.fixture
def standin() -> Iterator[MusicBrainzStandin]:
    server = MusicBrainzStandin(RECORDINGS)
    server.start()
    yield server
    server.stop()


def _client(standin: MusicBrainzStandin, **kwargs: Any) -> MusicBrainzClient:
    options: dict[str, Any] = {"min_interval_s": 0.0, "backoff_base_s": 0.01}
    options.update(kwargs)
    return MusicBrainzClient(standin.base_url, **options)


def test_query_quoting() -> None:
    assert build_recording_query('A "b" \\ c', "D") == 'recording:"A \\"b\\" \\\\ c" AND artist:"D"'
    assert build_recording_query("T", None) == 'recording:"T"'


async def test_lookup_by_isrc(standin: MusicBrainzStandin) -> None:
    async with _client(standin) as client:
        result = await client.lookup(isrc="QZSS11900001", title="ignored", artist="ignored")
    assert result.status == "found"
    assert result.matched_by == "isrc"
    recording = result.recording
    assert recording is not None
    assert (recording.mbid, recording.title, recording.artist) == (
        "mb-harbour",
        "Harbour Lights",
        "The Paper Lanterns",
    )
    assert (recording.album, recording.year, recording.track_number) == ("Night Ferry", 2019, 1)
    assert [r.path for r in standin.requests] == ["/ws/2/isrc/QZSS11900001"]
    assert standin.requests[0].headers["user-agent"] == DEFAULT_USER_AGENT


async def test_unknown_isrc_falls_back_to_search(standin: MusicBrainzStandin) -> None:
    async with _client(standin, user_agent="SoulSpotMesh/0.1 ( ops@example.invalid )") as client:
        result = await client.lookup(
            isrc="XX0000000000", title='The "Quoted" Song', artist="Ostara Vale"
        )
    assert result.status == "found"
    assert result.matched_by == "search"
    assert result.recording is not None
    assert result.recording.mbid == "mb-quote"
    assert result.recording.track_number == 5
    assert result.recording.year == 2023
    search = standin.requests_to("/ws/2/recording")[0]
    assert search.query["query"] == ['recording:"The \\"Quoted\\" Song" AND artist:"Ostara Vale"']
    assert search.headers["user-agent"] == "SoulSpotMesh/0.1 ( ops@example.invalid )"


async def test_not_found(standin: MusicBrainzStandin) -> None:
    async with _client(standin) as client:
        result = await client.lookup(title="Nothing Like It", artist="Nobody")
        empty = await client.lookup()
    assert result.status == "not_found"
    assert result.recording is None
    assert empty.status == "not_found"


async def test_requests_are_spaced_one_second_apart(standin: MusicBrainzStandin) -> None:
    async with _client(standin, min_interval_s=1.0) as client:
        results = await asyncio.gather(
            client.lookup(isrc="QZSS11900001"),
            client.lookup(title="Harbour Lights", artist="The Paper Lanterns"),
            client.lookup(isrc="QZSS11900001"),
        )
    assert [r.status for r in results] == ["found"] * 3
    arrivals = [r.at for r in standin.requests]
    assert len(arrivals) == 3
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) >= 1.0, gaps


async def test_503_is_retried(standin: MusicBrainzStandin) -> None:
    standin.fail_next(2)
    async with _client(standin) as client:
        result = await client.lookup(isrc="QZSS11900001")
    assert result.status == "found"
    assert standin.unavailable_served == 2


async def test_503_past_retries_is_skipped(standin: MusicBrainzStandin) -> None:
    standin.fail_next(10)
    async with _client(standin, max_retries=2) as client:
        result = await client.lookup(isrc="QZSS11900001")
    assert result.status == "skipped"
    assert "503" in result.reason
    assert standin.unavailable_served == 3


async def test_generic_user_agent_is_refused_and_skipped(standin: MusicBrainzStandin) -> None:
    async with _client(standin, user_agent="python-httpx/0.28.1") as client:
        result = await client.lookup(isrc="QZSS11900001")
    assert result.status == "skipped"
    assert "403" in result.reason


async def test_unreachable_is_skipped_not_raised() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with MusicBrainzClient(f"http://127.0.0.1:{port}", timeout=2) as client:
        result = await client.lookup(isrc="QZSS11900001", title="Harbour Lights")
    assert result.status == "skipped"
    assert "unreachable" in result.reason
    assert result.recording is None
