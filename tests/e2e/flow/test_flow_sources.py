"""Downloads from Soulseek (slskd stand-in) preferred over the folder source, falling back to
the folder when slskd goes away; and the mesh driven by grpcurl alone."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import uuid
from typing import TYPE_CHECKING

import pytest

from services.kit.testing.sample_audio import DEFAULT_SAMPLE_TRACKS
from tests.helpers.flows import (
    download,
    events,
    folder_env,
    sample_source,
    spotify_env,
    spotify_track,
    start_stack,
    track_of,
    wait_event,
)
from tests.helpers.mesh import ROOT
from tests.standins.spotify import SpotifyStandin

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers.mesh import Mesh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HARBOUR, SALT = DEFAULT_SAMPLE_TRACKS[0], DEFAULT_SAMPLE_TRACKS[1]
API_KEY = "standin-key"


def _remote(sample: dict[str, object]) -> str:
    return (
        f"@@alice\\Music\\{sample['artist']}\\{sample['album']}\\"
        f"{int(sample['track_number']):02d} - {sample['title']}.flac"  # type: ignore[call-overload]
    )


# The slskd stand-in in a process of its own, so stopping it really closes every connection
# (an in-process stand-in keeps serving keep-alive connections after shutdown()).
SLSKD_SCRIPT = """
import json, sys, threading
from tests.standins.slskd import Peer, PeerFile, SlskdStandin
spec = json.loads(sys.argv[1])
files = [PeerFile(f["remote"], seconds=f["seconds"], bit_depth=16) for f in spec["files"]]
server = SlskdStandin(api_key=spec["key"], downloads_dir=spec["downloads"],
                      peers=[Peer("alice", files)])
print(server.start(), flush=True)
threading.Event().wait()
"""


async def _start_slskd(
    mesh: Mesh, downloads: Path, samples: list[dict[str, object]]
) -> tuple[asyncio.subprocess.Process, str]:
    spec = {
        "key": API_KEY,
        "downloads": str(downloads),
        "files": [{"remote": _remote(s), "seconds": s["seconds"]} for s in samples],
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SLSKD_SCRIPT,
        json.dumps(spec),
        cwd=ROOT,
        env=mesh.procs["router"].env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    url = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
    assert url.startswith("http://"), url
    return process, url


async def test_soulseek_is_preferred_and_folder_takes_over_without_slskd(
    mesh: Mesh, tmp_path: Path
) -> None:
    source = sample_source(tmp_path)
    slskd_downloads = tmp_path / "downloads" / "slskd"
    mesh.start_router()
    await mesh.wait_serving("router")
    slskd, slskd_url = await _start_slskd(mesh, slskd_downloads, [HARBOUR, SALT])
    try:
        await start_stack(
            mesh,
            {
                "soulseek": {
                    "SOULSPOT_SOULSEEK__URL": slskd_url,
                    "SOULSPOT_SOULSEEK__API_KEY": API_KEY,
                    "SOULSPOT_SOULSEEK__DOWNLOADS_DIR": str(slskd_downloads),
                    "SOULSPOT_SOULSEEK__POLL_INTERVAL_S": "0.1",
                    "SOULSPOT_SOULSEEK__PROBE_INTERVAL_S": "0.5",
                },
                "folder": folder_env(tmp_path, source),
                "library": None,
            },
        )
        first = uuid.uuid4().hex
        answer, module = await download(mesh, track_of(HARBOUR), first)
        assert module == "soulseek"  # priority 10 beats the folder's 5
        completed_env, completed = await wait_event(
            mesh, "download.completed", correlation_id=first
        )
        assert completed_env.source_module == "soulseek"
        assert completed.download_id == answer.download_id
        _, ready = await wait_event(mesh, "track.ready", correlation_id=first)
        assert ready.download_id == answer.download_id

        # slskd stops: the soulseek module reports NOT_SERVING, the router stops routing to
        # it, and the next download comes from the folder.
        slskd.terminate()
        await slskd.wait()
        await mesh.wait_routable("soulseek", "download.track", routable=False)
        second = uuid.uuid4().hex
        answer, module = await download(mesh, track_of(SALT), second)
        assert module == "folder"
        completed_env, _ = await wait_event(mesh, "download.completed", correlation_id=second)
        assert completed_env.source_module == "folder"
        _, ready = await wait_event(mesh, "track.ready", correlation_id=second)
        assert ready.track.title == "Salt and Static"
    finally:
        if slskd.returncode is None:
            slskd.terminate()
            await slskd.wait()


async def _grpcurl(mesh: Mesh, method: str, body: object, correlation_id: str) -> object:
    grpcurl = shutil.which("grpcurl", path=str(ROOT / ".venv" / "bin"))
    if grpcurl is None:
        pytest.fail("grpcurl is not installed in .venv (make install)")
    # As the command line, with the files the mesh's CA made for it.
    pki = mesh.pki_dir
    process = await asyncio.create_subprocess_exec(
        grpcurl,
        *("-cacert", str(pki / "ca.crt")),
        *("-cert", str(pki / "client-cli.crt"), "-key", str(pki / "client-cli.key")),
        "-H",
        f"x-correlation-id: {correlation_id}",
        "-d",
        json.dumps(body),
        mesh.router_address,
        method,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def test_grpcurl_searches_and_downloads_through_the_router(
    mesh: Mesh, tmp_path: Path
) -> None:
    source = sample_source(tmp_path)
    spotify = SpotifyStandin(tracks=[spotify_track(HARBOUR, 1)])
    spotify.start()
    try:
        await start_stack(
            mesh,
            {
                "spotify": spotify_env(spotify),
                "folder": folder_env(tmp_path, source),
                "library": None,
            },
        )
        correlation_id = uuid.uuid4().hex
        found = await _grpcurl(
            mesh,
            "soulspot.capabilities.v1.SearchService/SearchTrack",
            {"query": "Harbour Lights"},
            correlation_id,
        )
        assert isinstance(found, dict)
        track = found["results"][0]["track"]
        assert track["title"] == "Harbour Lights"
        started = await _grpcurl(
            mesh,
            "soulspot.capabilities.v1.DownloadService/DownloadTrack",
            {"track": track, "requestedBy": "grpcurl"},
            correlation_id,
        )
        assert isinstance(started, dict)
        # grpcurl prints proto field names (download_id); JSON parsers take either spelling.
        download_id = started.get("download_id") or started["downloadId"]
        _, ready = await wait_event(
            mesh, "track.ready", where=lambda p: p.download_id == download_id
        )
        assert ready.file.path.startswith(str(mesh.library_root))
        # grpcurl's correlation id carried through the call and the events it caused.
        chain = await events(mesh, correlation_id=correlation_id)
        assert {"download.completed", "track.ready"} <= {e.event_type for e in chain}
    finally:
        spotify.stop()
