"""Event bus settings (the `bus` section: SOULSPOT_BUS__* or `bus:` in the config file)."""

from __future__ import annotations

from typing import Literal

from services.kit.support.settings import Section

MIB = 1024 * 1024


class BusSettings(Section):
    """Limits and defaults of the event bus."""

    # The log file; empty means <state_dir>/events.db.
    db_path: str = ""
    # What an acknowledged publish survives. FULL (the default): the log is synced to disk
    # before the ack, so a power cut loses no acked event. NORMAL: the ack waits for the
    # write, not the sync, so an acked event survives a crash of the router (kill -9) but a
    # power cut may take the last ones: NATS JetStream's default trade.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # Larger payloads are refused with INVALID_ARGUMENT. The gRPC server must accept
    # messages larger than this (the kit allows 16 MiB) so the bus can answer clearly.
    max_payload_bytes: int = 1 * MIB
    # Causation chains deeper than this are parked (DEPTH).
    max_causation_depth: int = 16
    default_max_in_flight: int = 64
    max_in_flight_cap: int = 4096
    default_ack_timeout_s: float = 30.0
    default_max_attempts: int = 5
    # Events read from the store per consumer per page; bounds each consumer's read-ahead.
    page_size: int = 256
    # The newest events kept in memory for subscribers that are caught up.
    tail_cache_size: int = 8192
    retention_max_age_s: float = 30 * 24 * 3600.0
    retention_max_bytes: int = 2 * 1024 * MIB
    retention_interval_s: float = 300.0
    # How often each consumer's lag is written to the consumer_lag gauge.
    metrics_interval_s: float = 5.0
