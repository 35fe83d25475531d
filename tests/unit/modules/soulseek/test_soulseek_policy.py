"""Turning a request's QualityPolicy into the ranking policy, and the search words."""

from __future__ import annotations

from services.soulseek.downloader import build_policy, search_query
from services.soulseek.settings import SoulseekSection
from soulspot.common.v1 import references_pb2

Q = references_pb2.QualityPolicy


def test_defaults_apply_without_a_policy() -> None:
    policy = build_policy(SoulseekSection(min_bitrate_kbps=256), None)
    assert policy.ranking.preferred_formats == ("flac", "mp3")
    assert policy.ranking.min_bitrate_kbps == 256
    assert policy.ranking.duration_tolerance_s == 5.0
    assert not policy.ranking.only_preferred_formats
    assert not policy.require_lossless


def test_zero_values_in_a_policy_keep_the_module_floor() -> None:
    policy = build_policy(SoulseekSection(), Q(allowed_versions=["Live"]))
    assert policy.ranking.min_bitrate_kbps == 192
    assert policy.ranking.allowed_versions == frozenset({"live"})


def test_formats_and_lossless() -> None:
    policy = build_policy(
        SoulseekSection(),
        Q(
            preferred_formats=[references_pb2.AUDIO_FORMAT_MP3, references_pb2.AUDIO_FORMAT_AAC],
            min_bitrate_kbps=320,
            duration_tolerance_ms=2000,
        ),
    )
    assert policy.ranking.preferred_formats == ("mp3", "m4a", "aac")
    assert policy.ranking.only_preferred_formats
    assert policy.ranking.min_bitrate_kbps == 320
    assert policy.ranking.duration_tolerance_s == 2.0

    lossless = build_policy(SoulseekSection(), Q(require_lossless=True))
    assert lossless.require_lossless
    assert lossless.ranking.only_preferred_formats
    assert lossless.ranking.preferred_formats == ("flac",)


def test_search_query_drops_punctuation_and_decorations() -> None:
    track = references_pb2.TrackReference(
        title="Harbour Lights (feat. Ostara Vale) - Remastered 2011", artist="The Paper Lanterns"
    )
    assert search_query(track) == "the paper lanterns harbour lights"
    assert search_query(references_pb2.TrackReference(title="AC/DC & Co", artist="AC/DC")) == (
        "ac dc and co"
    )
