"""The stored candidate plan: read back as written, beside the download records."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.domain.downloads.registry import DownloadRegistry
from services.domain.downloads.store import FILE_NAME
from services.soulseek.candidate_store import CandidatePlan, CandidateStore
from services.soulseek.ranking import RankedCandidate
from services.soulseek.slskd_api import CandidateFile
from soulspot.common.v1 import references_pb2
from tests.helpers.module_checks import make_bus

if TYPE_CHECKING:
    from pathlib import Path


def _candidate(user: str, file: CandidateFile) -> RankedCandidate:
    return RankedCandidate(
        username=user,
        file=file,
        score=71.5,
        has_free_upload_slot=True,
        queue_length=3,
        upload_speed=250_000,
        notes=("bitrate unknown",),
    )


PLAN = CandidatePlan(
    [
        _candidate(
            "alice",
            CandidateFile(
                "@@alice\\Music\\a.flac",
                1234,
                bit_depth=16,
                sample_rate=44100,
                length_s=1,
                extension="flac",
            ),
        ),
        _candidate("bob", CandidateFile("@@bob\\Music\\b.mp3", 999, bit_rate=320)),
        # Unknown numbers stay unknown (None), not zero.
        _candidate("alice", CandidateFile("@@alice\\Music\\c.mp3", 5, is_locked=True)),
    ],
    tried={0},
    failed_users={"alice"},
    attempt=1,
    reasons=["alice: errored"],
)


def test_a_plan_reads_back_as_written() -> None:
    again = CandidatePlan.from_json(PLAN.to_json())
    assert again == PLAN
    # The next pick skips the user that failed, as before the round trip.
    assert again.next_index() == PLAN.next_index() == 1


async def test_the_store_opens_an_existing_downloads_file_and_keeps_plans(tmp_path: Path) -> None:
    path = tmp_path / "soulseek" / FILE_NAME
    registry = DownloadRegistry(make_bus(), module="soulseek", db_path=path)
    record = registry.new(references_pb2.TrackReference(title="t", artist="a"), "cli")
    await registry.shutdown()

    store = CandidateStore(path)
    store.save(record.download_id, PLAN)
    store.save("soulseek-gone", CandidatePlan([]))
    store.close()

    store = CandidateStore(path)
    try:
        assert store.load(record.download_id) == PLAN
        assert store.retain([record.download_id]) == 1
        assert store.load("soulseek-gone") is None
        store.forget(record.download_id)
        assert store.load(record.download_id) is None
    finally:
        store.close()
    # The download records beside it are untouched.
    again = DownloadRegistry(make_bus(), module="soulseek", db_path=path)
    assert again.get(record.download_id).requested_by == "cli"
    await again.shutdown()
