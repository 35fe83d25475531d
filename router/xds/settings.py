"""`SOULSPOT_ROUTER__XDS__*`: the router's xDS control plane, on by default, each bound a range."""

from __future__ import annotations

from pydantic import Field

from services.kit.support.settings import Section


class XdsSection(Section):
    """Whether the router serves xDS (ADS) and the limits that guard its memory."""

    # Serve envoy.service.discovery.v3.AggregatedDiscoveryService on the router's port.
    enabled: bool = True
    # Open ADS streams per caller identity (a plaintext caller: per peer host); another is
    # RESOURCE_EXHAUSTED. A gRPC process holds one stream per control plane.
    max_streams_per_identity: int = Field(default=16, ge=1, le=10_000)
    # Resource names one DiscoveryRequest may subscribe to; more is INVALID_ARGUMENT.
    max_resource_names: int = Field(default=1024, ge=1, le=100_000)
    # Registry changes within this window are pushed together (the push follows within it).
    push_debounce_s: float = Field(default=0.02, ge=0, le=0.1)
    # After the router starts, clients are answered only once this has passed: modules
    # register again within it (their retry backoff tops out at 5 s, then a health check),
    # and a client that reconnects meanwhile keeps calling with the configuration it has.
    warmup_s: float = Field(default=7.0, ge=0, le=60)
    # Retries gRPC makes on another endpoint for an idempotent capability (gRPC caps a call
    # at 5 attempts in all).
    max_retries: int = Field(default=3, ge=1, le=4)
    # Retry backoff: the first interval; gRPC grows it up to ten times this.
    retry_base_interval_s: float = Field(default=0.025, gt=0, le=10)
    # Outlier detection (gRFC A50): eject an endpoint failing at least this share of its calls
    # for a while. gRPC counts every status but OK as a failure, logical answers (NOT_FOUND)
    # too, so it is off (0) unless asked for.
    outlier_failure_percent: int = Field(default=0, ge=0, le=100)
    # ... out of at least this many calls in an interval, before an endpoint is judged at all.
    outlier_min_requests: int = Field(default=20, ge=1, le=100_000)
