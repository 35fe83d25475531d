"""FolderList: the settings type for a bounded list of folders a module may act in.

From the environment it reads like PATH (`/data/downloads:/srv/music`) or as a JSON list
(`["/data/downloads"]`); from the YAML file, as a list. An empty value is an empty list, which
the modules treat as "nothing is allowed", never as "everything".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field
from pydantic_settings import NoDecode

__all__ = ["DEFAULT_DOWNLOADS_DIR", "MAX_FOLDERS", "FolderList"]

# The folder every download module writes below by default (soulseek: <this>/slskd, folder:
# <this>/folder), so a default that names it allows exactly the downloads and nothing else.
DEFAULT_DOWNLOADS_DIR = Path("./.soulspot/downloads")
# A handful of mounts is plenty; a longer list is a mistake (a glob expanded into it).
MAX_FOLDERS = 16


def _split(value: object) -> object:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [part for part in text.split(os.pathsep) if part.strip()]


FolderList = Annotated[list[Path], NoDecode, BeforeValidator(_split), Field(max_length=MAX_FOLDERS)]
