"""Choosing the pipeline file, and the CLI's per-download event sorting."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from cli.flows import DownloadWatch
from router.pipeline import PIPELINE_FILE_ENV, create_pipeline
from services.kit.support.settings import KitSettings
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2, envelope_pb2, pipeline_pb2, track_pb2

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

ONE_STEP = "steps:\n  - capability: import.track\n    required: true\n"


def test_default_pipeline_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PIPELINE_FILE_ENV, raising=False)
    pipeline = create_pipeline(KitSettings(state_dir=tmp_path))
    assert [s.capability for s in pipeline.config.steps] == [
        "enrich.metadata",
        "import.track",
        "notify.track_ready",
    ]


def test_pipeline_file_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(ONE_STEP)
    monkeypatch.setenv(PIPELINE_FILE_ENV, str(path))
    pipeline = create_pipeline(KitSettings(state_dir=tmp_path))
    assert [s.capability for s in pipeline.config.steps] == ["import.track"]


def _envelope(event_type: str) -> envelope_pb2.EventEnvelope:
    return envelope_pb2.EventEnvelope(event_id=event_type, event_type=event_type)


async def test_download_watch_keeps_events_that_arrive_before_the_download_id_is_known() -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:9")  # never connected in this test
    try:
        watch = DownloadWatch(channel, "test")
        track = references_pb2.TrackReference(title="T", artist="A")
        file = references_pb2.FileReference(path="/library/t.flac")
        # The downloader finished before DownloadTrack answered: events for "d1" come first.
        await watch._on_event(
            download_pb2.DownloadCompleted(download_id="d1", track=track, file=file),
            _envelope("download.completed"),
        )
        await watch._on_event(
            track_pb2.TrackReady(download_id="other", track=track, file=file),
            _envelope("track.ready"),
        )
        await watch._on_event(
            track_pb2.TrackReady(download_id="d1", track=track, file=file),
            _envelope("track.ready"),
        )
        progress: list[float] = []
        outcome = await watch.outcome("d1", on_progress=lambda p, _s: progress.append(p))
        assert outcome.outcome == "downloaded"
        assert outcome.detail == "/library/t.flac"
        assert progress == [100.0]

        await watch._on_event(
            pipeline_pb2.PipelineRunFailed(
                pipeline_run_id="r", capability="import.track", reason="disk full", download_id="d2"
            ),
            _envelope("pipeline.run_failed"),
        )
        failed = await watch.outcome("d2")
        assert failed.outcome == "failed"
        assert "disk full" in failed.detail
    finally:
        await channel.close()
