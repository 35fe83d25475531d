"""The metadata module's settings: `SOULSPOT_METADATA__*` or `metadata:` in the config file."""

from __future__ import annotations

from pydantic import Field

from services.kit.module.spec import ModuleSection
from services.kit.support.folder_list import DEFAULT_DOWNLOADS_DIR, FolderList
from services.kit.support.settings import KitSettings
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


class MetadataSettings(KitSettings):
    metadata: MetadataSection = MetadataSection()
