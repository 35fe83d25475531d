"""The metadata module's settings: `SOULSPOT_METADATA__*` or `metadata:` in the config file."""

from __future__ import annotations

from pydantic import Field

from services.kit.module.spec import ModuleSection
from services.kit.support.folder_list import DEFAULT_DOWNLOADS_DIR, FolderList
from services.kit.support.settings import KitSettings
from services.metadata.cover_art import DEFAULT_COVER_ART_URL, CoverSize
from services.metadata.musicbrainz_api import DEFAULT_BASE_URL, DEFAULT_USER_AGENT

DEFAULT_PORT = 50065


class MetadataSection(ModuleSection):
    # SOULSPOT_METADATA__MUSICBRAINZ_URL: the MusicBrainz server (a mirror works too).
    musicbrainz_url: str = DEFAULT_BASE_URL
    # SOULSPOT_METADATA__USER_AGENT: MusicBrainz refuses anonymous clients; say who you are.
    user_agent: str = DEFAULT_USER_AGENT
    # SOULSPOT_METADATA__OFFLINE: never look anything up online.
    offline: bool = False
    # How long one MusicBrainz request may take; the lookup is skipped, not failed, past it.
    timeout_s: float = 5.0
    # SOULSPOT_METADATA__TAG_DIRS: the folders enrich.metadata and metadata.read may act in
    # besides the library root (SOULSPOT_LIBRARY_ROOT, always allowed: a deferred enrichment
    # tags the imported file), PATH-style or a JSON list. A file elsewhere, a symlink or a
    # special file is refused; the state folder never counts.
    tag_dirs: FolderList = Field(default_factory=lambda: [DEFAULT_DOWNLOADS_DIR])
    # SOULSPOT_METADATA__COVER_ART: embed the release's front cover from the Cover Art Archive
    # when MusicBrainz matched a release and the file has no front cover yet.
    cover_art: bool = True
    # SOULSPOT_METADATA__COVER_ART_URL: the Cover Art Archive (or a mirror of its API).
    cover_art_url: str = DEFAULT_COVER_ART_URL
    # SOULSPOT_METADATA__COVER_ART_SIZE: which image: a thumbnail (front-250, front-500,
    # front-1200, in pixels) or the original upload (front).
    cover_art_size: CoverSize = "front-500"
    # SOULSPOT_METADATA__COVER_ART_MAX_BYTES: a larger image is not embedded (no cover).
    cover_art_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=10 * 1024 * 1024)
    # SOULSPOT_METADATA__COVER_ART_TIMEOUT_S: how long fetching one cover may take.
    cover_art_timeout_s: float = Field(default=10.0, gt=0, le=120)


class MetadataSettings(KitSettings):
    metadata: MetadataSection = MetadataSection()
