"""docker-compose.yml has the shape the design and `soulspot up` rely on."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cli.up.plan import find_compose_file, healthcheck_args, load_compose, volume_targets

ROOT = Path(__file__).resolve().parents[3]
ROUTER_PORT = 50051
ROUTER_HTTP_PORT = 8080
MODULE_PORTS = {
    "spotify": 50061,
    "catalog": 50062,
    "soulseek": 50063,
    "folder": 50064,
    "metadata": 50065,
    "library": 50066,
    "notifications": 50067,
}
# Modules that are correctly NOT_SERVING without credentials or a daemon to talk to.
LIVENESS_ONLY = {"spotify", "soulseek"}
MESH = ["router", *MODULE_PORTS]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(ROOT / "docker-compose.yml")


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service = compose["services"].get(name)
    assert isinstance(service, dict), f"service {name} missing"
    return service


def _unset_default(value: str) -> str:
    """What a `${VAR:-default}` value is when VAR is unset (any other value as it is)."""
    match = re.fullmatch(r"\$\{[A-Z0-9_]+:-(.*)\}", value)
    return match[1] if match else value


def test_the_project_file_is_the_one_up_finds(compose: dict[str, Any]) -> None:
    assert find_compose_file() == ROOT / "docker-compose.yml"


def test_every_design_service_is_present(compose: dict[str, Any]) -> None:
    assert set(MESH) <= set(compose["services"])
    assert _service(compose, "client").get("profiles") == ["e2e"]


@pytest.mark.parametrize("name", MESH)
def test_mesh_service_shape(compose: dict[str, Any], name: str) -> None:
    service = _service(compose, name)
    assert service.get("init") is True, "Python as PID 1 ignores SIGTERM without an init"
    assert not service.get("profiles"), "mesh services run by default"
    command = service.get("command")
    expected = "router" if name == "router" else f"services.{name}"
    assert command == ["python", "-m", expected]
    assert service.get("image") == _service(compose, "router").get("image"), "one image"


@pytest.mark.parametrize("name", MESH)
def test_command_modules_are_importable(compose: dict[str, Any], name: str) -> None:
    module = _service(compose, name)["command"][2]
    assert importlib.util.find_spec(module) is not None, f"{module} does not exist"
    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no main"


@pytest.mark.parametrize("name", MESH)
def test_healthcheck_calls_the_grpc_probe_on_the_service_port(
    compose: dict[str, Any], name: str
) -> None:
    service = _service(compose, name)
    args = healthcheck_args(service)
    port = ROUTER_PORT if name == "router" else MODULE_PORTS[name]
    assert args[:3] == ["python", "-m", "services.kit.rpc.healthprobe"]
    assert args[-1] == f"127.0.0.1:{port}"
    assert ("--serving-or-not" in args) == (name in LIVENESS_ONLY)
    # Under mutual TLS the probe presents the identity of the process it checks.
    kind = "router" if name == "router" else "module"
    assert args[args.index("--identity") + 1] == f"{kind}/{name}"
    assert service["healthcheck"].get("interval")
    assert importlib.util.find_spec("services.kit.rpc.healthprobe") is not None


@pytest.mark.parametrize("name", list(MODULE_PORTS))
def test_modules_start_after_a_healthy_router(compose: dict[str, Any], name: str) -> None:
    depends = _service(compose, name).get("depends_on")
    assert isinstance(depends, dict)
    assert depends.get("router") == {"condition": "service_healthy"}


@pytest.mark.parametrize("name", list(MODULE_PORTS))
def test_module_addresses_match_the_defaults(compose: dict[str, Any], name: str) -> None:
    env = _service(compose, name)["environment"]
    port = MODULE_PORTS[name]
    section = name.upper()
    assert env[f"SOULSPOT_{section}__ADDRESS"] == f"0.0.0.0:{port}"
    assert env[f"SOULSPOT_{section}__ADVERTISE_ADDRESS"] == f"{name}:{port}"
    assert _unset_default(env["SOULSPOT_ROUTER_ADDRESS"]) == f"router:{ROUTER_PORT}"


def test_router_listens_on_all_interfaces_and_publishes_grpc_and_http(
    compose: dict[str, Any],
) -> None:
    router = _service(compose, "router")
    env = router["environment"]
    assert env["SOULSPOT_ROUTER__ADDRESS"] == f"0.0.0.0:{ROUTER_PORT}"
    assert env["SOULSPOT_ROUTER__HTTP_ADDRESS"] == f"0.0.0.0:{ROUTER_HTTP_PORT}"
    published = {str(p).rsplit(":", 1)[-1] for p in router["ports"]}
    assert published == {str(ROUTER_PORT), str(ROUTER_HTTP_PORT)}
    # The router waits for nothing but its certificate.
    assert router["depends_on"] == {"pki": {"condition": "service_completed_successfully"}}


@pytest.mark.parametrize("name", MESH)
def test_state_and_library_are_volumes(compose: dict[str, Any], name: str) -> None:
    service = _service(compose, name)
    targets = volume_targets(service.get("volumes"))
    env = service["environment"]
    assert env["SOULSPOT_STATE_DIR"] in targets
    assert env["SOULSPOT_LIBRARY_ROOT"] in targets
    for volume in service["volumes"]:
        source = str(volume).split(":")[0]
        if not source.startswith(("$", ".", "/")):
            assert source in compose["volumes"], f"named volume {source} not declared"


PKI_DIR = "/data/pki"


@pytest.mark.parametrize("name", [*MESH, "client"])
def test_every_process_reads_the_pki_volume_read_only_after_it_is_made(
    compose: dict[str, Any], name: str
) -> None:
    service = _service(compose, name)
    assert service["environment"]["SOULSPOT_TLS__PKI_DIR"] == PKI_DIR
    assert f"pki:{PKI_DIR}:ro" in service["volumes"]
    if name != "client":  # the client waits for the router, which waits for pki
        assert service["depends_on"]["pki"] == {"condition": "service_completed_successfully"}


def test_the_pki_service_makes_certificates_for_every_service_name(
    compose: dict[str, Any],
) -> None:
    pki = _service(compose, "pki")
    command = pki["command"]
    assert command[:4] == ["python", "-m", "services.kit.security", "init"]
    assert command[command.index("--pki-dir") + 1] == PKI_DIR
    dns = {command[i + 1] for i, arg in enumerate(command) if arg == "--dns"}
    # Every service another one dials: the mesh, the `cluster` profile's second router and
    # NATS nodes; not the one-shot pki service itself nor the client, which serve nothing.
    assert dns == set(compose["services"]) - {"pki", "client"}
    assert set(MESH) <= dns
    assert f"pki:{PKI_DIR}" in pki["volumes"]  # the only writer
    assert "pki" in compose["volumes"]


def test_folder_reads_its_source_read_only(compose: dict[str, Any]) -> None:
    folder = _service(compose, "folder")
    source = folder["environment"]["SOULSPOT_FOLDER__SOURCE_DIR"]
    mounts = [str(v) for v in folder["volumes"] if f":{source}" in str(v)]
    assert len(mounts) == 1
    assert mounts[0].endswith(":ro")


def test_client_waits_for_every_module_and_runs_get(compose: dict[str, Any]) -> None:
    client = _service(compose, "client")
    assert client["command"][:2] == ["soulspot", "get"]
    assert set(client["depends_on"]) == set(MESH)
    assert all(v == {"condition": "service_healthy"} for v in client["depends_on"].values())


@pytest.mark.parametrize("name", ["nats-1", "nats-2", "nats-3"])
def test_nats_nodes_run_from_the_project_image_with_the_mesh_tls(
    compose: dict[str, Any], name: str
) -> None:
    node = _service(compose, name)
    assert node.get("profiles") == ["cluster"]
    assert node.get("image") == _service(compose, "router").get("image"), "one image"
    command = node["command"]
    assert command[:3] == ["python", "-m", "services.kit.security.nats_node"]
    assert importlib.util.find_spec(command[2]) is not None
    assert f"--server-name={name}" in command
    assert "--pki-dir=/data/pki" in command, "the node speaks mutual TLS with the mesh CA"
    assert "pki:/data/pki:ro" in node["volumes"]
    pki_command = _service(compose, "pki")["command"]
    assert pki_command[pki_command.index("--nats") + 1] == "nats"
    assert {"nats-1", "nats-2", "nats-3"} <= {
        pki_command[i + 1] for i, arg in enumerate(pki_command) if arg == "--dns"
    }


def test_docker_compose_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed: `docker-compose config -q` not run")
    for profile_args in ([], ["--profile", "e2e"], ["--profile", "cluster"]):
        result = subprocess.run(
            [binary, "-f", str(ROOT / "docker-compose.yml"), *profile_args, "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr


def test_every_health_check_argument_is_one_word(compose: dict[str, Any]) -> None:
    # podman's Docker API joins a CMD health check and splits it again on whitespace, so an
    # argument with a space (`python -c "import x; ..."`) runs as several and always fails.
    for name, service in compose["services"].items():
        test = service.get("healthcheck", {}).get("test")
        if not test:
            continue
        assert test[0] == "CMD", f"{name}: an exec-form CMD health check"
        spaced = [arg for arg in test[1:] if re.search(r"\s", arg)]
        assert not spaced, f"{name}: health check arguments with whitespace: {spaced}"
