"""A durable consumer's bus patterns as JetStream filter subjects: NATS's own wildcards where
they say the same, the whole stream (checked by the bus) where they cannot."""

from __future__ import annotations

import pytest

from router.bus.jetstream.pull_consumer import durable_name, filter_subjects
from router.bus.jetstream.records import consumer_from_token


@pytest.mark.parametrize(
    ("patterns", "subjects"),
    [
        ([], ["S.>"]),
        (["*"], ["S.>"]),
        (["**"], ["S.>"]),
        (["download.completed"], ["S.download.completed"]),
        (["download.*"], ["S.download.*"]),
        (["download.**"], ["S.download.>"]),
        (["download.*", "library.**"], ["S.download.*", "S.library.>"]),
        (["download.*.done"], ["S.download.*.done"]),
        # `**` before the last token: NATS cannot say it.
        (["download.**.done"], ["S.>"]),
        # Overlapping filters are refused by JetStream: the whole stream instead.
        (["download.*", "download.completed"], ["S.>"]),
        (["download.**", "download.a.b"], ["S.>"]),
        (["*", "download.completed"], ["S.>"]),
        # Same prefix, different depth: no overlap.
        (["download.*", "download.a.b"], ["S.download.*", "S.download.a.b"]),
        (["download.completed", "download.completed"], ["S.download.completed"]),
    ],
)
def test_patterns_become_filter_subjects(patterns: list[str], subjects: list[str]) -> None:
    assert filter_subjects("S", patterns) == subjects


@pytest.mark.parametrize("name", ["orders", "a.b", "with space", "star*and>", "ünï"])
def test_the_durable_name_is_safe_and_reads_back(name: str) -> None:
    durable = durable_name(name)
    assert not any(c in durable for c in ".*> \t")
    assert consumer_from_token(durable) == name
