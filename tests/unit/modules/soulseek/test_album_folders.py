"""Tests of the soulseek module's album folder ranking: search results grouped by peer and
folder, complete folders first by quality and the peer's slot, queue and speed."""

from __future__ import annotations

from services.domain.album_matching import ExpectedTrack, FolderRules
from services.soulseek.album_downloader import album_query, rank_folders
from services.soulseek.slskd_api import CandidateFile, SearchResponse

TITLES = ["Harbour Lights", "Salt Road"]
EXPECTED = [ExpectedTrack(t, n, 200.0) for n, t in enumerate(TITLES, 1)]


def _files(user: str, folder: str, ext: str = "flac", **extra: object) -> tuple[CandidateFile, ...]:
    return tuple(
        CandidateFile(
            filename=f"@@{user}\\Music\\{folder}\\{n:02d} - {t}.{ext}",
            size=1000,
            length_s=200,
            **extra,  # type: ignore[arg-type]
        )
        for n, t in enumerate(TITLES, 1)
    )


def _peer(user: str, files: tuple[CandidateFile, ...], *, free: bool = True) -> SearchResponse:
    return SearchResponse(
        username=user,
        has_free_upload_slot=free,
        queue_length=0 if free else 20,
        upload_speed=1_000_000,
        files=files,
    )


def test_complete_folders_rank_by_quality_then_by_the_peers_availability() -> None:
    responses = [
        _peer("slow", _files("slow", "Night Ferry"), free=False),
        _peer("fast", _files("fast", "Night Ferry")),
        _peer("lossy", _files("lossy", "Night Ferry", "mp3", bit_rate=320)),
    ]
    ranked, rejected = rank_folders(responses, EXPECTED, FolderRules(), "Night Ferry")
    assert [c.username for c in ranked] == ["fast", "slow", "lossy"]
    assert rejected == []
    best = ranked[0]
    assert [f.filename.rsplit("\\", 1)[-1] for f in best.files] == [
        "01 - Harbour Lights.flac",
        "02 - Salt Road.flac",
    ]


def test_each_folder_of_a_peer_is_judged_on_its_own_and_rejections_say_why() -> None:
    mixed = _files("amy", "Night Ferry") + _files("amy", "Night Ferry (Live)")[:1]
    ranked, rejected = rank_folders([_peer("amy", mixed)], EXPECTED, FolderRules(), "Night Ferry")
    assert [c.verdict.folder for c in ranked] == ["@@amy\\Music\\Night Ferry"]
    assert rejected == [
        "amy:@@amy\\Music\\Night Ferry (Live): unwanted version: live",
    ]


def test_locked_files_never_make_a_folder_complete() -> None:
    files = _files("bo", "Night Ferry")
    response = SearchResponse(
        username="bo",
        has_free_upload_slot=True,
        queue_length=0,
        upload_speed=1,
        files=files[:1],
        locked_files=files[1:],
    )
    ranked, rejected = rank_folders([response], EXPECTED, FolderRules(), "Night Ferry")
    assert ranked == []
    assert rejected == ["bo:@@bo\\Music\\Night Ferry: 1 audio files, the album has 2 tracks"]


def test_the_album_query_names_artist_and_album_words_once() -> None:
    assert album_query("The Paper Lanterns", "Night Ferry (Deluxe)") == (
        "the paper lanterns night ferry deluxe"
    )
