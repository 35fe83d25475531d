"""The CLI's per-download event sorting (cli/download_watch.py): events of a download that
arrive before its id is known are kept for it, others' events are not mixed in, and a failed
pipeline run ends the wait as a failure."""

from __future__ import annotations

import grpc

from cli.download_watch import DownloadWatch
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2, envelope_pb2, pipeline_pb2, track_pb2


def _envelope(event_type: str) -> envelope_pb2.EventEnvelope:
    return envelope_pb2.EventEnvelope(event_id=event_type, event_type=event_type)


async def test_download_watch_keeps_events_that_arrive_before_the_download_id_is_known() -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:9")  # never connected in this test
    try:
        watch = DownloadWatch(channel, "test")
        track = references_pb2.TrackReference(title="T", artist="A")
        downloaded = references_pb2.FileReference(path="/downloads/t.flac")
        filed = references_pb2.FileReference(path="/library/t.flac")
        elsewhere = references_pb2.FileReference(path="/library/other.flac")
        # The downloader finished before DownloadTrack answered: events for "d1" come first.
        await watch.on_event(
            download_pb2.DownloadCompleted(download_id="d1", track=track, file=downloaded),
            _envelope("download.completed"),
        )
        await watch.on_event(
            track_pb2.TrackReady(download_id="other", track=track, file=elsewhere),
            _envelope("track.ready"),
        )
        await watch.on_event(
            track_pb2.TrackReady(download_id="d1", track=track, file=filed),
            _envelope("track.ready"),
        )
        progress: list[float] = []
        outcome = await watch.outcome("d1", on_progress=lambda p, _s: progress.append(p))
        assert outcome.outcome == "downloaded"
        assert outcome.detail == "/library/t.flac"
        assert progress == [100.0]

        await watch.on_event(
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
