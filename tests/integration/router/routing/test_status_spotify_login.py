"""`soulspot status` says whether a Spotify login is stored where `soulspot login spotify`
keeps it, and when it was written, without a word of the token: in the table and in --json."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from services.kit.support.secret_file import write_secret_json
from tests.helpers.processes import REPO

if TYPE_CHECKING:
    from pathlib import Path

    from router.app import RouterApp

TOKEN = "AQD-refresh-token-that-must-never-be-printed"


async def _status(router: RouterApp, state_dir: Path, *args: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "SOULSPOT_CONFIG"}
    environment.update(SOULSPOT_TLS__PLAINTEXT="true", SOULSPOT_STATE_DIR=str(state_dir))
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "cli.main", "status", "--router", router.address, *args),
        cwd=REPO,
        env={**environment, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, out.decode() + err.decode()
    return out.decode()


async def test_status_says_none_then_stored_with_when(router: RouterApp, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    assert "spotify login: none" in await _status(router, state_dir)
    none = json.loads(await _status(router, state_dir, "--json"))
    assert none["spotify_login"]["stored"] is False

    token_file = state_dir / "spotify" / "token.json"
    write_secret_json(token_file, {"client_id": "app", "refresh_token": TOKEN})
    written = datetime.fromtimestamp(token_file.stat().st_mtime, UTC)
    table = await _status(router, state_dir)
    assert f"spotify login: stored ({written.astimezone():%Y-%m-%d %H:%M})" in table
    document = json.loads(await _status(router, state_dir, "--json"))
    login = document["spotify_login"]
    assert (login["stored"], login["file"]) == (True, str(token_file))
    assert datetime.fromisoformat(login["written_at"]) == written
    assert TOKEN not in table
    assert TOKEN not in json.dumps(document)
