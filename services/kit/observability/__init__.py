"""What a process of the mesh tells about itself: JSON logs, Prometheus metrics, OpenTelemetry
spans."""

from __future__ import annotations
