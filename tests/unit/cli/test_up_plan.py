"""The compose -> local process translation of `soulspot up` (cli/up/plan.py), as pure data."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from cli.up.plan import (
    ComposeError,
    config_file_env_names,
    find_compose_file,
    healthcheck_args,
    interpolate,
    load_compose,
    localize_addresses,
    localize_path,
    mesh_module,
    plan_stack,
    process_env,
    router_http_address,
    start_levels,
    volume_targets,
)

HOSTS = ("router", "folder", "nats")


def _compose() -> dict[str, Any]:
    return load_compose(find_compose_file())


def _plan(tmp_path: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("environ", {})
    return plan_stack(_compose(), tmp_path / "st", python="/py/bin/python3", **kwargs)


# -- interpolation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A:-x}", {}, "x"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A:-x}", {"A": "y"}, "y"),
        ("$A/${B}", {"A": "1", "B": "2"}, "1/2"),
        ("${MISSING}", {}, ""),
        ("$$HOME", {"HOME": "/h"}, "$HOME"),
        ("${SRC:-./.soulspot/source}:/data/source:ro", {}, "./.soulspot/source:/data/source:ro"),
    ],
)
def test_interpolate_follows_compose(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


def test_interpolate_required_variable() -> None:
    with pytest.raises(ComposeError, match="set it"):
        interpolate("${TOKEN:?set it}", {})
    assert interpolate("${TOKEN:?set it}", {"TOKEN": "t"}) == "t"


# -- addresses and paths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "offset", "expected"),
    [
        ("0.0.0.0:50064", 0, "127.0.0.1:50064"),
        ("folder:50064", 0, "127.0.0.1:50064"),
        ("router:50051", 100, "127.0.0.1:50151"),
        ("nats://nats:4222", 0, "nats://127.0.0.1:4222"),
        ("myrouter:50051", 0, "myrouter:50051"),  # not a compose service
        ("folder.example:1", 0, "folder.example:1"),
        ("/data/folder:1", 0, "/data/folder:1"),
        ("10.0.0.0:80", 0, "10.0.0.0:80"),
        ("folder", 0, "folder"),
    ],
)
def test_localize_addresses(value: str, offset: int, expected: str) -> None:
    assert localize_addresses(value, HOSTS, offset) == expected


def test_port_offset_out_of_range_is_refused() -> None:
    with pytest.raises(ComposeError, match="out of range"):
        localize_addresses("router:65000", HOSTS, 1000)


def test_localize_path_maps_mount_points_only() -> None:
    mounts = {"/data/state": Path("/l/state"), "/data/downloads": Path("/l/downloads")}
    assert localize_path("/data/state", mounts) == "/l/state"
    assert localize_path("/data/downloads/folder", mounts) == "/l/downloads/folder"
    assert localize_path("/data/statefile", mounts) == "/data/statefile"
    assert localize_path("relative/data/state", mounts) == "relative/data/state"


def test_volume_targets_short_and_long_syntax() -> None:
    volumes = [
        "state:/data/state",
        "${SRC:-./x}:/data/source:ro",
        {"type": "volume", "source": "lib", "target": "/data/library"},
        "/anonymous",
    ]
    assert volume_targets(volumes) == ["/data/state", "/data/source", "/data/library", "/anonymous"]


def test_healthcheck_args_and_mesh_module() -> None:
    service = {"healthcheck": {"test": ["CMD", "python", "-m", "x", "127.0.0.1:1"]}}
    assert healthcheck_args(service) == ["python", "-m", "x", "127.0.0.1:1"]
    assert healthcheck_args({"healthcheck": {"test": "a  b"}}) == ["a", "b"]
    assert healthcheck_args({"healthcheck": {"test": ["CMD-SHELL", "a  b"]}}) == ["a", "b"]
    assert healthcheck_args({}) == []
    assert mesh_module(["python", "-m", "services.folder"]) == "services.folder"
    assert mesh_module(["python3", "-m", "router"]) == "router"
    assert mesh_module(["soulspot", "get", "x"]) is None
    assert mesh_module(["python", "-m", "services.folder.x"]) is None


def test_config_file_names_map_to_env_names() -> None:
    names = config_file_env_names({"state_dir": "/s", "folder": {"source_dir": "/m"}})
    assert names == {"SOULSPOT_STATE_DIR", "SOULSPOT_FOLDER", "SOULSPOT_FOLDER__SOURCE_DIR"}
    assert config_file_env_names(None) == set()


# -- the plan for the project's docker-compose.yml --------------------------------------------


def test_plan_runs_router_and_modules_not_profiles(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    names = [p.name for p in plan.processes]
    assert names[0] == "router"
    assert set(names) == {
        "router",
        "spotify",
        "catalog",
        "soulseek",
        "folder",
        "metadata",
        "library",
        "notifications",
    }
    assert "client" in plan.skipped
    assert plan.get("folder").argv == ["/py/bin/python3", "-m", "services.folder"]
    assert [p.name for p in plan.levels()[0]] == ["router"]


def test_plan_addresses_are_loopback_with_default_ports(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    router = plan.get("router")
    assert router.address == "127.0.0.1:50051"
    assert router.health_address == "127.0.0.1:50051"
    assert router_http_address(plan) == "127.0.0.1:8080"
    folder = plan.get("folder")
    assert folder.env["SOULSPOT_ROUTER_ADDRESS"] == "127.0.0.1:50051"
    assert folder.env["SOULSPOT_FOLDER__ADDRESS"] == "127.0.0.1:50064"
    assert folder.env["SOULSPOT_FOLDER__ADVERTISE_ADDRESS"] == "127.0.0.1:50064"
    assert folder.health_address == "127.0.0.1:50064"
    for proc in plan.processes:
        for value in proc.env.values():
            assert "0.0.0.0" not in value
            assert not value.startswith("/data")


def test_plan_port_offset_moves_every_port(tmp_path: Path) -> None:
    plan = _plan(tmp_path, port_offset=1000)
    assert plan.get("router").address == "127.0.0.1:51051"
    assert router_http_address(plan) == "127.0.0.1:9080"
    catalog = plan.get("catalog")
    assert catalog.env["SOULSPOT_ROUTER_ADDRESS"] == "127.0.0.1:51051"
    assert catalog.health_address == "127.0.0.1:51062"


def test_plan_paths_live_under_the_state_folder(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    root = (tmp_path / "st").resolve()
    assert plan.state_dir == root
    folder = plan.get("folder").env
    assert folder["SOULSPOT_STATE_DIR"] == str(root / "state")
    assert folder["SOULSPOT_LIBRARY_ROOT"] == str(root / "library")
    assert folder["SOULSPOT_FOLDER__SOURCE_DIR"] == str(root / "source")
    assert folder["SOULSPOT_FOLDER__DOWNLOADS_DIR"] == str(root / "downloads" / "folder")
    assert plan.mounts["/data/source"] == root / "source"


def test_liveness_only_for_modules_that_may_lack_a_backend(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    relaxed = {p.name for p in plan.processes if p.serving_or_not}
    assert relaxed == {"spotify", "soulseek"}


def test_empty_settings_are_dropped_and_given_ones_pass_through(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    assert "SOULSPOT_SPOTIFY__CLIENT_ID" not in plan.get("spotify").env
    assert "SOULSPOT_SOULSEEK__URL" not in plan.get("soulseek").env


def test_the_callers_environment_wins(tmp_path: Path) -> None:
    environ = {
        "SOULSPOT_FOLDER__SOURCE_DIR": "/music",
        "SOULSPOT_FOLDER__ADDRESS": "127.0.0.1:6000",
        "SOULSPOT_SPOTIFY__CLIENT_ID": "id",
        "PATH": "/bin",
    }
    plan = _plan(tmp_path, environ=environ)
    folder = plan.get("folder")
    assert "SOULSPOT_FOLDER__SOURCE_DIR" not in folder.env
    assert "SOULSPOT_FOLDER__ADDRESS" not in folder.env
    assert folder.address == "127.0.0.1:6000"
    assert folder.health_address == "127.0.0.1:6000"
    env = process_env(environ, folder)
    assert env["SOULSPOT_FOLDER__SOURCE_DIR"] == "/music"
    assert env["PATH"] == "/bin"
    assert env["SOULSPOT_FOLDER__DOWNLOADS_DIR"].endswith("downloads/folder")


def test_the_config_file_wins_over_the_plan(tmp_path: Path) -> None:
    plan = _plan(tmp_path, config_data={"folder": {"source_dir": "/nas/music"}})
    assert "SOULSPOT_FOLDER__SOURCE_DIR" not in plan.get("folder").env
    assert "SOULSPOT_FOLDER__DOWNLOADS_DIR" in plan.get("folder").env


def test_only_restricts_and_unknown_names_are_refused(tmp_path: Path) -> None:
    plan = _plan(tmp_path, only=["router", "folder"])
    assert [p.name for p in plan.processes] == ["router", "folder"]
    assert plan.skipped["catalog"] == "not in --only"
    alone = _plan(tmp_path, only=["folder"])
    assert [[p.name for p in level] for level in alone.levels()] == [["folder"]]
    with pytest.raises(ComposeError, match="unknown service"):
        _plan(tmp_path, only=["nope"])


def test_start_levels_follow_depends_on_and_refuse_cycles() -> None:
    compose: dict[str, Any] = {
        "services": {
            "c": {"command": "python -m services.c", "depends_on": ["b"]},
            "b": {"command": "python -m services.b", "depends_on": {"a": {}}},
            "a": {"command": "python -m services.a"},
        }
    }
    plan = plan_stack(compose, Path("/tmp/x"), environ={})
    assert [[p.name for p in level] for level in plan.levels()] == [["a"], ["b"], ["c"]]
    compose["services"]["a"]["depends_on"] = ["c"]
    with pytest.raises(ComposeError, match="cycle"):
        start_levels(plan_stack(compose, Path("/tmp/x"), environ={}).processes)


def test_default_interpreter_is_the_running_one(tmp_path: Path) -> None:
    router = plan_stack(_compose(), tmp_path, environ={}).router
    assert router is not None
    assert router.argv[0] == sys.executable
