from __future__ import annotations

from services.soulseek.ranking import (
    QualityPolicy,
    Rejection,
    TrackRequest,
    detect_versions,
    evaluate,
    rank_candidates,
)
from services.soulseek.slskd_api import CandidateFile, SearchResponse

REQUEST = TrackRequest(title="Harbour Lights", artist="The Paper Lanterns", duration_ms=215_000)


def _file(name: str, **kwargs: object) -> CandidateFile:
    path = f"@@peer\\Music\\The Paper Lanterns\\Night Ferry\\{name}"
    ext = name.rsplit(".", 1)[-1].lower()
    fields: dict[str, object] = {"size": 5_000_000, "length_s": 215, "extension": ext}
    fields.update(kwargs)
    return CandidateFile(filename=path, **fields)  # type: ignore[arg-type]


def _response(*files: CandidateFile, user: str = "peer", **kwargs: object) -> SearchResponse:
    fields: dict[str, object] = {
        "has_free_upload_slot": True,
        "queue_length": 0,
        "upload_speed": 1_000_000,
    }
    fields.update(kwargs)
    return SearchResponse(username=user, files=tuple(files), **fields)  # type: ignore[arg-type]


def _reason(policy: QualityPolicy, file: CandidateFile, request: TrackRequest = REQUEST) -> str:
    outcome = evaluate(request, policy, _response(file), file)
    assert isinstance(outcome, Rejection), outcome
    return outcome.reason


def test_detect_versions() -> None:
    assert detect_versions("Song (Live at Wembley)") == {"live"}
    assert detect_versions("Song - Club Remix") == {"remix"}
    assert detect_versions("Song (Re-Mix)") == {"remix"}
    assert detect_versions("Song [Karaoke Version]") == {"karaoke"}
    assert detect_versions("Alive and Well") == set()
    assert detect_versions("Song (Instrumental)") == {"instrumental"}


def test_live_and_remix_rejected_unless_requested() -> None:
    policy = QualityPolicy()
    assert _reason(policy, _file("01 - Harbour Lights (Live).flac")) == "unwanted version: live"
    assert "remix" in _reason(policy, _file("01 - Harbour Lights (DJ Remix).mp3", bit_rate=320))
    assert "karaoke" in _reason(policy, _file("Harbour Lights Karaoke.flac"))
    live_request = TrackRequest(title="Harbour Lights - Live", artist="The Paper Lanterns")
    live_file = _file("01 - Harbour Lights (Live).flac")
    assert not isinstance(
        evaluate(live_request, policy, _response(live_file), live_file), Rejection
    )
    allowed = QualityPolicy(allowed_versions=frozenset({"remix"}))
    remix = _file("01 - Harbour Lights (Remix).flac")
    assert not isinstance(evaluate(REQUEST, allowed, _response(remix), remix), Rejection)


def test_version_in_folder_is_rejected() -> None:
    file = CandidateFile(
        filename="@@p\\Music\\The Paper Lanterns\\Live in Oslo\\01 - Harbour Lights.flac",
        size=1,
        extension="flac",
    )
    assert _reason(QualityPolicy(), file) == "unwanted version: live"


def test_bitrate_floor_and_lossless_pass() -> None:
    policy = QualityPolicy(min_bitrate_kbps=256)
    low = _file("01 - Harbour Lights.mp3", bit_rate=192)
    assert _reason(policy, low) == "below bitrate floor: 192 < 256 kbps"
    lossless = _file("01 - Harbour Lights.flac", bit_rate=None)
    assert not isinstance(evaluate(REQUEST, policy, _response(lossless), lossless), Rejection)
    # No declared bitrate: estimated from size and length (1 MB over 215 s is ~37 kbps).
    estimated = _file("01 - Harbour Lights.mp3", size=1_000_000)
    assert "below bitrate floor: 37" in _reason(policy, estimated)


def test_duration_tolerance() -> None:
    policy = QualityPolicy(duration_tolerance_s=3)
    far = _file("01 - Harbour Lights.flac", length_s=260)
    assert _reason(policy, far).startswith("duration mismatch: 260s vs 215s")
    near = _file("01 - Harbour Lights.flac", length_s=217)
    assert not isinstance(evaluate(REQUEST, policy, _response(near), near), Rejection)
    unknown = _file("01 - Harbour Lights.flac", length_s=None)
    assert not isinstance(evaluate(REQUEST, policy, _response(unknown), unknown), Rejection)


def test_non_audio_locked_and_title_mismatch() -> None:
    policy = QualityPolicy()
    assert _reason(policy, _file("cover.jpg")) == "not audio: .jpg"
    assert _reason(policy, _file("01 - Harbour Lights.flac", is_locked=True)).startswith("locked")
    assert _reason(policy, _file("05 - Other Song.flac")).startswith("title mismatch")
    strict = QualityPolicy(preferred_formats=("flac",), only_preferred_formats=True)
    ogg = _file("01 - Harbour Lights.ogg", bit_rate=320)
    assert _reason(strict, ogg).startswith("format not allowed: .ogg")


def test_lossless_preferred_over_high_bitrate_mp3() -> None:
    flac = _file("01 - Harbour Lights.flac")
    mp3 = _file("01 - Harbour Lights.mp3", bit_rate=320)
    result = rank_candidates(REQUEST, [_response(mp3, user="a"), _response(flac, user="b")])
    assert [c.file.extension for c in result.accepted] == ["flac", "mp3"]
    mp3_first = QualityPolicy(preferred_formats=("mp3", "flac"), prefer_lossless=False)
    result = rank_candidates(REQUEST, [_response(mp3), _response(flac)], mp3_first)
    assert result.accepted[0].file.extension == "mp3"


def test_higher_bitrate_wins_among_lossy() -> None:
    files = [_file("01 - Harbour Lights.mp3", bit_rate=br) for br in (256, 320, 192)]
    result = rank_candidates(REQUEST, [_response(f, user=str(i)) for i, f in enumerate(files)])
    assert [c.file.bit_rate for c in result.accepted] == [320, 256, 192]


def test_peer_availability_breaks_ties() -> None:
    file = _file("01 - Harbour Lights.flac")
    busy = _response(file, user="busy", has_free_upload_slot=False, queue_length=40)
    free = _response(file, user="free")
    result = rank_candidates(REQUEST, [busy, free])
    assert [c.username for c in result.accepted] == ["free", "busy"]


def test_spotify_title_decorations_do_not_hurt_matching() -> None:
    request = TrackRequest(title="Harbour Lights - Remastered 2011 (feat. Someone)", artist="x")
    file = _file("01 - Harbour Lights.flac")
    assert not isinstance(evaluate(request, QualityPolicy(), _response(file), file), Rejection)


def test_explain_summarises_rejections() -> None:
    files = [
        _file("01 - Harbour Lights (Live).flac"),
        _file("01 - Harbour Lights (Live 2).flac"),
        _file("01 - Harbour Lights.mp3", bit_rate=96),
    ]
    result = rank_candidates(REQUEST, [_response(*files)])
    assert result.best is None
    explanation = result.explain()
    assert explanation.startswith("all 3 files rejected")
    assert "2 unwanted version" in explanation
    assert "1 below bitrate floor" in explanation
    assert rank_candidates(REQUEST, []).explain() == "no search results"
