"""Unix times (float seconds, as stores and clocks keep them) as protobuf Timestamps."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

__all__ = ["timestamp_at"]


def timestamp_at(seconds: float) -> timestamp_pb2.Timestamp:
    """The Timestamp of a Unix time in seconds (as precise as the float is)."""
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts
