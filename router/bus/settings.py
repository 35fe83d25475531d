"""Event bus settings (the `bus` section: SOULSPOT_BUS__* or `bus:` in the config file)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from services.kit.support.settings import Section

KIB = 1024
MIB = 1024 * KIB


class BusSettings(Section):
    """Limits and defaults of the event bus.

    Every limit that guards the router's memory is a setting with a range: a request over a
    bound is refused with INVALID_ARGUMENT, a quota used up with RESOURCE_EXHAUSTED, and each
    error names the setting (e.g. SOULSPOT_BUS__MAX_EVENT_BYTES)."""

    # The log file; empty means <state_dir>/events.db.
    db_path: str = ""
    # What an acknowledged publish survives. FULL (the default): the log is synced to disk
    # before the ack, so a power cut loses no acked event. NORMAL: the ack waits for the
    # write, not the sync, so an acked event survives a crash of the router (kill -9) but a
    # power cut may take the last ones: NATS JetStream's default trade.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # Where the log lives: SQLite in the router (the default), or a NATS JetStream stream
    # (router/bus/jetstream_store.py). On JetStream, FULL needs every server to run with
    # `jetstream { sync_interval: always }` (synced before the publish ack, as here); with
    # the server's default (synced every 2 minutes) an acked event survives a crash of the
    # server process but not a power cut of a lone server: NORMAL. The store cannot see the
    # server's configuration, so the level is the operator's promise.
    backend: Literal["sqlite", "jetstream"] = "sqlite"
    # The NATS servers to connect to (any of a cluster's); only with backend "jetstream".
    nats_servers: list[str] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1, max_length=32
    )
    # The stream that holds the log; its dead letters, consumer records, replays and event
    # ids go in a stream and KV buckets named after it (<name>_DLQ, <name>_CONSUMERS, ...).
    nats_stream: str = Field(default="SOULSPOT_EVENTS", pattern=r"^[A-Za-z0-9_-]{1,48}$")
    # Copies of the stream and buckets in a cluster: 3 means an append is acked once a
    # quorum (2 of 3) holds it.
    nats_replicas: int = Field(default=1, ge=1, le=5)
    # JetStream's duplicate window (Nats-Msg-Id = event_id); beyond it the ids bucket finds
    # the first copy.
    nats_duplicate_window_s: float = Field(default=120.0, ge=0.1, le=7 * 86400.0)
    # With several routers on one JetStream, each durable consumer is served by one router
    # at a time, the holder of its lease (renewed every third of this). A lease that has not
    # been renewed for this long, on the observing router's own clock, is taken over by the
    # next router a subscriber of that consumer reaches.
    consumer_lease_s: float = Field(default=10.0, ge=1.0, le=600.0)
    # How long a starting router keeps trying to reach JetStream (backend "jetstream") before
    # it exits; meanwhile it serves with its health NOT_SERVING and says what it waits for.
    # 0: it keeps trying for as long as it runs.
    nats_start_wait_s: float = Field(default=300.0, ge=0, le=7 * 86400.0)
    # How long one request to JetStream may take before the store gives up on it.
    nats_request_timeout_s: float = Field(default=5.0, gt=0, le=120.0)
    # Larger payloads are refused with INVALID_ARGUMENT. The gRPC server must accept
    # messages larger than this (the kit allows 16 MiB) so the bus can answer clearly.
    max_payload_bytes: int = Field(default=1 * MIB, ge=1, le=16 * MIB)
    # The whole envelope (payload, attributes, causation chain, every string) as serialized:
    # larger events are refused with INVALID_ARGUMENT. The payload's limit plus room for
    # the envelope's own fields.
    max_event_bytes: int = Field(default=1 * MIB + 64 * KIB, ge=1 * KIB, le=16 * MIB)
    # Attributes: how many, and how long each key and value may be (characters).
    max_attributes: int = Field(default=32, ge=0, le=1024)
    max_attribute_key_chars: int = Field(default=128, ge=1, le=4096)
    max_attribute_value_chars: int = Field(default=1024, ge=1, le=64 * KIB)
    # Every other string of the envelope and of its causation hops (event_type, subject,
    # ordering_key, correlation_id, traceparent, ...).
    max_string_field_chars: int = Field(default=1024, ge=64, le=64 * KIB)
    # Causation chains deeper than this are parked (DEPTH).
    max_causation_depth: int = Field(default=16, ge=1, le=1024)
    default_max_in_flight: int = Field(default=64, ge=1, le=65536)
    # The most deliveries a subscriber may ask to have in flight (SubscribeStart.max_in_flight);
    # asking more is INVALID_ARGUMENT.
    max_in_flight_cap: int = Field(default=1024, ge=1, le=65536)
    # Bytes of unacked deliveries per Subscribe stream: past this the bus sends that stream
    # nothing more until acks come back, whatever max_in_flight it asked (one delivery
    # always fits, however large).
    max_in_flight_bytes: int = Field(default=16 * MIB, ge=64 * KIB, le=1024 * MIB)
    default_ack_timeout_s: float = Field(default=30.0, gt=0, le=86400)
    # The longest ack timeout a subscriber may ask (SubscribeStart.ack_timeout); asking more
    # is INVALID_ARGUMENT, so no subscriber pins deliveries in memory for a day.
    max_ack_timeout_s: float = Field(default=600.0, gt=0, le=86400)
    default_max_attempts: int = Field(default=5, ge=1, le=1000)
    # Events read from the store per consumer per page; bounds each consumer's read-ahead.
    page_size: int = Field(default=256, ge=1, le=10000)
    # The newest events kept in memory for subscribers that are caught up: at most this many
    # and at most this many bytes.
    tail_cache_size: int = Field(default=8192, ge=1, le=1_000_000)
    tail_cache_max_bytes: int = Field(default=64 * MIB, ge=1 * MIB, le=4096 * MIB)
    # ListEvents answers at most this many bytes of events per page (at least one event);
    # the rest comes with next_page_token. Under gRPC's default 4 MiB receive limit.
    max_list_bytes: int = Field(default=3 * MIB, ge=64 * KIB, le=15 * MIB)
    # Durable consumers one caller identity may create; another is RESOURCE_EXHAUSTED.
    max_consumers_per_identity: int = Field(default=64, ge=1, le=100_000)
    # Open Subscribe streams per caller identity; another is RESOURCE_EXHAUSTED.
    max_subscribe_streams_per_identity: int = Field(default=64, ge=1, le=100_000)
    retention_max_age_s: float = 30 * 24 * 3600.0
    retention_max_bytes: int = 2 * 1024 * MIB
    retention_interval_s: float = 300.0
    # How often each consumer's lag is written to the consumer_lag gauge.
    metrics_interval_s: float = 5.0

    @model_validator(mode="after")
    def _defaults_within_bounds(self) -> Self:
        if self.default_ack_timeout_s > self.max_ack_timeout_s:
            raise ValueError("default_ack_timeout_s must not exceed max_ack_timeout_s")
        if self.default_max_in_flight > self.max_in_flight_cap:
            raise ValueError("default_max_in_flight must not exceed max_in_flight_cap")
        if self.max_payload_bytes > self.max_event_bytes:
            raise ValueError("max_payload_bytes must not exceed max_event_bytes")
        return self
