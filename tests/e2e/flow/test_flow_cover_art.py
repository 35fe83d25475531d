"""The whole flow with the metadata module online (MusicBrainz and Cover Art Archive stand-ins):
the file that lands in the library carries the matched release's front cover."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mutagen
import pytest

from services.kit.testing.sample_audio import DEFAULT_SAMPLE_TRACKS
from tests.helpers.flows import (
    download,
    folder_env,
    sample_source,
    start_stack,
    track_of,
    wait_event,
)
from tests.standins.coverart import CoverArtStandin, png_image
from tests.standins.musicbrainz import MusicBrainzStandin, StandinRecording

if TYPE_CHECKING:
    from tests.helpers.mesh import Mesh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HARBOUR = DEFAULT_SAMPLE_TRACKS[0]  # The Paper Lanterns - Harbour Lights, FLAC, 2019
MBID = "5d0a4f3e-0000-4000-8000-0000000000c1"
RELEASE = f"rel-{MBID}"  # the release the MusicBrainz stand-in lists for the recording
COVER = png_image(16, 16, (20, 60, 140))


async def test_the_library_file_carries_the_release_s_front_cover(
    mesh: Mesh, tmp_path: Path
) -> None:
    musicbrainz = MusicBrainzStandin(
        [
            StandinRecording(
                MBID,
                str(HARBOUR["title"]),
                str(HARBOUR["artist"]),
                str(HARBOUR["album"]),
                "2019-04-05",
                1,
                isrcs=[str(HARBOUR["isrc"])],
            )
        ]
    )
    archive = CoverArtStandin({RELEASE: COVER})
    musicbrainz.start()
    archive.start()
    try:
        await start_stack(
            mesh,
            {
                "folder": folder_env(tmp_path, sample_source(tmp_path)),
                "metadata": {
                    "SOULSPOT_METADATA__OFFLINE": "false",
                    "SOULSPOT_METADATA__MUSICBRAINZ_URL": musicbrainz.base_url,
                    "SOULSPOT_METADATA__USER_AGENT": "SoulSpotTests/0.1 ( tests )",
                    "SOULSPOT_METADATA__COVER_ART_URL": archive.base_url,
                },
                "library": None,
            },
        )
        correlation_id = uuid.uuid4().hex
        await download(mesh, track_of(HARBOUR), correlation_id)
        _, enriched = await wait_event(
            mesh, "metadata.enriched", correlation_id=correlation_id, timeout=40
        )
        assert enriched.cover_embedded, enriched.cover_skipped_reason
        _, ready = await wait_event(mesh, "track.ready", correlation_id=correlation_id, timeout=40)
    finally:
        archive.stop()
        musicbrainz.stop()

    placed = Path(ready.file.path)
    assert placed.is_relative_to(mesh.library_root)
    audio: Any = mutagen.File(str(placed))
    fronts = [p for p in audio.pictures if p.type == 3]  # a FLAC picture block
    assert [(p.mime, p.data) for p in fronts] == [("image/png", COVER)]
    assert archive.requests_to(f"/release/{RELEASE}/")
