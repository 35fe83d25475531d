"""A request's quality rules for an album folder: the formats' extensions come from the
domain's one table, as soulseek's do, and requiring lossless keeps `.alac` of ALAC."""

from __future__ import annotations

from services.folder.album_copier import folder_rules
from services.soulseek.downloader import build_policy
from services.soulseek.settings import SoulseekSection
from soulspot.common.v1 import references_pb2

Q = references_pb2.QualityPolicy
ALAC = references_pb2.AUDIO_FORMAT_ALAC


def test_an_alac_folder_may_hold_alac_or_m4a_files_as_a_soulseek_search_may() -> None:
    rules = folder_rules(Q(preferred_formats=[ALAC]), 2.0)
    assert rules.allowed_formats == ("alac", "m4a")
    policy = build_policy(SoulseekSection(), Q(preferred_formats=[ALAC]))
    assert policy.ranking.preferred_formats == rules.allowed_formats


def test_requiring_lossless_keeps_the_alac_files_not_the_m4a() -> None:
    rules = folder_rules(Q(preferred_formats=[ALAC], require_lossless=True), 2.0)
    assert rules.allowed_formats == ("alac",)
    policy = build_policy(SoulseekSection(), Q(preferred_formats=[ALAC], require_lossless=True))
    assert policy.ranking.preferred_formats == rules.allowed_formats


def test_requiring_lossless_of_a_lossy_format_falls_back_to_the_lossless_ones() -> None:
    rules = folder_rules(
        Q(preferred_formats=[references_pb2.AUDIO_FORMAT_MP3], require_lossless=True), 2.0
    )
    assert rules.allowed_formats == ("flac", "wav", "aiff", "aif")
