"""Router settings: `SOULSPOT_ROUTER__*` environment variables or the `router:` YAML section."""

from __future__ import annotations

from pydantic import BaseModel, Field

from router.bus.settings import BusSettings
from router.xds.settings import XdsSection
from services.kit.support.folder_list import DEFAULT_DOWNLOADS_DIR, FolderList
from services.kit.support.settings import KitSettings, Section


class StaticCapability(BaseModel):
    """One capability of a module listed in config."""

    capability: str
    priority: int = 0
    required_modules: list[str] = Field(default_factory=list)


class StaticModule(BaseModel):
    """A module that does not announce itself; the router watches it from config alone."""

    name: str
    address: str
    capabilities: list[StaticCapability] = Field(default_factory=list)
    version: str = ""


class RouterSection(Section):
    """`SOULSPOT_ROUTER__*`: durations in seconds, named `*_s`; each bounded so a typo (a
    zero poll interval, a share above one) fails at start-up instead of in routing."""

    address: str = "127.0.0.1:50051"
    # Modules listed here are registered at start-up and health-watched like announced ones.
    modules: list[StaticModule] = Field(default_factory=list)
    # Health: how long one Check may take, and how often to poll where Watch is unimplemented.
    health_check_timeout_s: float = Field(default=1.0, gt=0, le=60)
    health_poll_interval_s: float = Field(default=1.0, gt=0, le=3600)
    # How soon to retry a failed health Watch (a module that went away and may come back).
    health_retry_interval_s: float = Field(default=0.25, gt=0, le=3600)
    # Circuit breaker: consecutive failures that open it, seconds before a trial call.
    breaker_failures: int = Field(default=3, ge=1, le=1000)
    breaker_cooldown_s: float = Field(default=2.0, gt=0, le=3600)
    # An idempotent call with another candidate behind it gets at most this share of the
    # caller's remaining time, so a module that hangs leaves time for the next one.
    attempt_share: float = Field(default=0.5, gt=0, le=1)
    # Per-attempt limit for idempotent calls when the caller set no deadline.
    default_attempt_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    # How long a direct-mode client may trust a routing table without a newer one.
    routing_table_ttl_s: float = Field(default=30.0, gt=0, le=86400)
    # The post-download pipeline's steps; unset uses the shipped router/pipeline/pipeline.yaml.
    pipeline_file: str | None = None
    # With the bus on JetStream, pipeline runs live in its KV, shared by every router; a
    # router renews its lease every third of this, and a lease that has not moved for this
    # long is dead: another router takes its runs over.
    pipeline_lease_s: float = Field(default=10.0, ge=1.0, le=600.0)
    # SOULSPOT_ROUTER__DOWNLOAD_DIRS: the folders the download modules write to (PATH-style
    # or a JSON list). The pipeline acts on a download.completed only when its file is a
    # regular file inside one of them (no symlink, never the state folder); any other run
    # fails with the reason. Empty: every run fails.
    download_dirs: FolderList = Field(default_factory=lambda: [DEFAULT_DOWNLOADS_DIR])
    # The dashboard and JSON API: host:port, "off" for none; empty is 127.0.0.1:8080.
    http_address: str = ""
    # Host names the dashboard answers besides loopback (its Host header check: a request
    # naming another host is refused with 421, so DNS rebinding cannot reach it).
    http_allowed_hosts: list[str] = Field(default_factory=list)
    # Open Register streams per caller identity (a plaintext caller: per peer host); another
    # is RESOURCE_EXHAUSTED.
    max_register_streams_per_identity: int = Field(default=64, ge=1, le=100_000)
    # Who may register, publish and administer (router/security/policy.py); unset uses the
    # shipped router/security/policy.yaml.
    policy_file: str | None = None
    # How long a module whose registration stream is gone stays listed (inactive) before the
    # router forgets it, so abandoned names do not pile up.
    gone_module_ttl_s: float = Field(default=3600.0, gt=0, le=7 * 86400)
    # Playlists the router re-syncs on a schedule (`soulspot watch-playlist`): at most this
    # many watches (another is RESOURCE_EXHAUSTED), and at most this many tracks read from
    # each playlist per run.
    max_playlist_watches: int = Field(default=100, ge=1, le=10_000)
    watch_max_tracks: int = Field(default=10_000, ge=1, le=100_000)
    # With the bus on JetStream, watches live in its KV, shared by every router: a router
    # running a watch renews its claim every third of this; a claim not renewed for this
    # long (its router died) lets another router run the watch.
    watch_lease_s: float = Field(default=60.0, ge=5.0, le=3600.0)
    # SOULSPOT_ROUTER__XDS__*: the xDS control plane for proxyless clients (router/xds/).
    xds: XdsSection = Field(default_factory=XdsSection)


class RouterSettings(KitSettings):
    router: RouterSection = Field(default_factory=RouterSection)
    bus: BusSettings = Field(default_factory=BusSettings)
