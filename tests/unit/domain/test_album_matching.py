"""Tests of album folder scoring: which folder holds the whole album, and why others do not."""

from __future__ import annotations

from services.domain.album_matching import (
    ExpectedTrack,
    FolderFile,
    FolderRules,
    group_by_folder,
    score_folder,
)

TRACKS = [
    ExpectedTrack("Harbour Lights", 1, 200.0),
    ExpectedTrack("Northern Line", 2, 180.0),
    ExpectedTrack("Tidewater", 3, 240.0),
]
FOLDER = "Music\\Artist\\Sea Songs"


def _files(
    ext: str = "flac",
    *,
    bitrate: int | None = None,
    durations: tuple[float, ...] = (200, 180, 240),
) -> list[FolderFile]:
    names = ["01 - Harbour Lights", "02 - Northern Line", "03 - Tidewater"]
    return [
        FolderFile(f"{FOLDER}\\{n}.{ext}", duration_s=d, bitrate_kbps=bitrate)
        for n, d in zip(names, durations, strict=True)
    ]


def test_a_complete_folder_is_accepted_with_files_in_album_order() -> None:
    files = list(reversed(_files()))
    verdict = score_folder(FOLDER, files, TRACKS, FolderRules(), album="Sea Songs")
    assert verdict.accepted, verdict.reason
    assert [f.stem for f in verdict.files] == [
        "01 - Harbour Lights",
        "02 - Northern Line",
        "03 - Tidewater",
    ]
    assert [t.title for t in verdict.tracks if t is not None] == [t.title for t in TRACKS]


def test_a_folder_missing_a_track_is_rejected_with_the_count() -> None:
    verdict = score_folder(FOLDER, _files()[:2], TRACKS, FolderRules(), album="Sea Songs")
    assert verdict.reason == "2 audio files, the album has 3 tracks"


def test_a_file_whose_duration_is_out_of_tolerance_fails_its_track() -> None:
    files = _files(durations=(200, 180, 300))
    verdict = score_folder(FOLDER, files, TRACKS, FolderRules(duration_tolerance_s=5))
    assert "Tidewater" in verdict.reason


def test_mixed_formats_are_rejected() -> None:
    files = _files()[:2] + _files("mp3", bitrate=320)[2:]
    verdict = score_folder(FOLDER, files, TRACKS, FolderRules())
    assert verdict.reason == "mixed formats: flac, mp3"


def test_the_quality_floor_applies_to_every_lossy_file() -> None:
    verdict = score_folder(
        FOLDER, _files("mp3", bitrate=128), TRACKS, FolderRules(min_bitrate_kbps=192)
    )
    assert verdict.reason == "below bitrate floor: 128 < 192 kbps"


def test_a_format_outside_the_allowed_ones_is_rejected() -> None:
    verdict = score_folder(
        FOLDER, _files("mp3", bitrate=320), TRACKS, FolderRules(allowed_formats=("flac",))
    )
    assert verdict.reason.startswith("format not allowed: .mp3")


def test_a_live_folder_is_rejected_for_a_studio_album() -> None:
    live = "Music\\Artist\\Sea Songs (Live)"
    files = [FolderFile(f.path.replace(FOLDER, live), f.duration_s) for f in _files()]
    verdict = score_folder(live, files, TRACKS, FolderRules(), album="Sea Songs")
    assert verdict.reason == "unwanted version: live"


def test_lossless_scores_above_lossy_when_both_are_complete() -> None:
    flac = score_folder(FOLDER, _files(), TRACKS, FolderRules())
    mp3 = score_folder(FOLDER, _files("mp3", bitrate=320), TRACKS, FolderRules())
    assert flac.accepted
    assert mp3.accepted
    assert flac.score > mp3.score


def test_without_a_track_list_the_folder_name_must_name_the_album() -> None:
    shaped = score_folder(FOLDER, _files(), [], FolderRules(), album="Sea Songs")
    assert shaped.accepted
    assert len(shaped.files) == 3
    other = score_folder(FOLDER, _files(), [], FolderRules(), album="Mountain Hymns")
    assert other.reason.startswith("folder name does not name the album")


def test_files_are_grouped_by_their_folder() -> None:
    other = FolderFile("Music\\Other\\01 - x.flac")
    groups = group_by_folder([*_files(), other])
    assert sorted(groups) == ["Music\\Artist\\Sea Songs", "Music\\Other"]
    assert len(groups[FOLDER]) == 3
