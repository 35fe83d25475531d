"""docker-compose.yml as a plan of local processes: the pure half of `soulspot up`.

The compose file is the one description of the stack. For local processes each mesh service
(command `python -m router` or `python -m services.<module>`, no compose profile) keeps its
command and environment, translated:

* addresses: `0.0.0.0:PORT` and `<service>:PORT` become `127.0.0.1:PORT` (plus an optional
  port offset, so two stacks or a test can run beside a default one);
* paths: a value under a volume's container path `/data/<name>` moves to `<state dir>/<name>`
  (every service's /data/state becomes ./.soulspot/state, and so on), except the mesh's
  certificates: /data/pki becomes ./.soulspot/state/pki, where every process looks for them
  by default (`<state dir>/pki`);
* `python` becomes the interpreter running `soulspot up`;
* compose variables (`${VAR:-default}`) are filled from the calling environment, and a value
  that ends up empty is dropped (empty means "not configured", the same as unset);
* the calling environment and the YAML config file (SOULSPOT_CONFIG) win over the plan: a
  variable the user set, or a setting the file holds, is not overridden.

Nothing here starts a process; cli/up/runner.py does.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

COMPOSE_FILE = "docker-compose.yml"
HEALTHPROBE_MODULE = "services.kit.rpc.healthprobe"
SERVING_OR_NOT = "--serving-or-not"
LOOPBACK = "127.0.0.1"
ROUTER = "router"
CONFIG_ENV = "SOULSPOT_CONFIG"
ENV_PREFIX = "SOULSPOT_"
# The compose stack's certificate step; `soulspot up` creates the certificates itself.
PKI_INIT_MODULE = "services.kit.security"
# Volumes whose local folder is not `<state dir>/<name>`.
LOCAL_FOLDERS = {"pki": PurePosixPath("state/pki")}

_MESH_MODULE = re.compile(r"^(router|services\.[a-z_][a-z0-9_]*)$")
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")


class ComposeError(ValueError):
    """The compose file does not have the shape `soulspot up` relies on."""


# ---------------------------------------------------------------------------------------------
# Reading the file


def find_compose_file(start: Path | None = None) -> Path:
    """docker-compose.yml next to this package's project, else in `start` or a parent."""
    candidates = [Path(__file__).resolve().parents[2] / COMPOSE_FILE]
    here = (start or Path.cwd()).resolve()
    candidates += [folder / COMPOSE_FILE for folder in (here, *here.parents)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {COMPOSE_FILE} found (looked in {here} and its parents)")


def load_compose(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise ComposeError(f"{path}: no `services` mapping")
    return data


def read_config_file(environ: Mapping[str, str]) -> Any:
    """The parsed YAML config file SOULSPOT_CONFIG names, or None when it names none."""
    name = environ.get(CONFIG_ENV)
    if not name:
        return None
    path = Path(name)
    if not path.is_file():
        raise ComposeError(f"{CONFIG_ENV}={name}: no such file")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Compose variable substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, $$.

    `${VAR:?message}` / `${VAR?message}` raise ComposeError when VAR is unset (or empty).
    """

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("bare")
        op = match.group("op")
        current = environ.get(name)
        # With a colon, an empty value counts as unset (compose's rule).
        missing = not current if op in (":-", ":?") else current is None
        if not missing:
            return current or ""
        if op in (":-", "-"):
            return interpolate(match.group("arg") or "", environ)
        if op in (":?", "?"):
            raise ComposeError(f"${{{name}}}: {match.group('arg') or 'required'}")
        return ""

    return _VARIABLE.sub(substitute, value)


def _as_argv(command: Any, service: str) -> list[str]:
    if isinstance(command, str):
        return shlex.split(command)
    if isinstance(command, list) and all(isinstance(part, str) for part in command):
        return list(command)
    raise ComposeError(f"service {service}: command must be a string or a list of strings")


def _as_env(environment: Any, service: str) -> dict[str, str]:
    if environment is None:
        return {}
    if isinstance(environment, dict):
        return {str(k): "" if v is None else str(v) for k, v in environment.items()}
    if isinstance(environment, list):
        out: dict[str, str] = {}
        for item in environment:
            key, _, value = str(item).partition("=")
            out[key] = value
        return out
    raise ComposeError(f"service {service}: environment must be a mapping or a list")


def _depends_on(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [str(k) for k in value]
    if isinstance(value, list):
        return [str(k) for k in value]
    return []


def volume_targets(volumes: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """Container paths of a service's volumes (short `src:dst[:mode]` or long syntax)."""
    targets = []
    for volume in volumes or []:
        if isinstance(volume, dict):
            target = volume.get("target")
        else:
            # Variables first: `${SRC:-./x}:/data/x:ro` holds colons of its own.
            parts = interpolate(str(volume), environ or {}).split(":")
            target = parts[1] if len(parts) >= 2 else parts[0]
        if target:
            targets.append(str(target))
    return targets


def healthcheck_args(service: Mapping[str, Any]) -> list[str]:
    """The healthcheck's command as an argv (without the CMD / CMD-SHELL marker)."""
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, str):
        return shlex.split(test)
    if isinstance(test, list):
        args = [str(part) for part in test]
        if args and args[0] in ("CMD", "CMD-SHELL"):
            if args[0] == "CMD-SHELL":
                return shlex.split(" ".join(args[1:]))
            return args[1:]
        return args
    return []


def mesh_module(argv: list[str]) -> str | None:
    """`router` or `services.<m>` when argv is `python -m <that>`, else None."""
    if len(argv) >= 3 and PurePosixPath(argv[0]).name.startswith("python") and argv[1] == "-m":
        return argv[2] if _MESH_MODULE.match(argv[2]) else None
    return None


# ---------------------------------------------------------------------------------------------
# Translation


def localize_addresses(value: str, hosts: Iterable[str], port_offset: int = 0) -> str:
    """Every `0.0.0.0:PORT` or `<host>:PORT` (host among `hosts`) in value -> 127.0.0.1:PORT.

    Works inside URLs too (`nats://nats:4222`).
    """
    names = sorted({"0.0.0.0", *hosts}, key=len, reverse=True)
    pattern = re.compile(
        # At the start, after a separator or after `scheme://`; not inside a path or name.
        r"(?:(?<=//)|(?<![A-Za-z0-9_./-]))("
        + "|".join(re.escape(n) for n in names)
        + r"):(\d{1,5})(?!\d)"
    )

    def substitute(match: re.Match[str]) -> str:
        port = int(match.group(2)) + port_offset
        if not 0 < port < 65536:
            raise ComposeError(f"{match.group(0)}: port {port} out of range after the offset")
        return f"{LOOPBACK}:{port}"

    return pattern.sub(substitute, value)


def localize_path(value: str, mounts: Mapping[str, Path]) -> str:
    """A value at or under a container mount point -> the same place under the local folder."""
    for target in sorted(mounts, key=len, reverse=True):
        if value == target:
            return str(mounts[target])
        if value.startswith(target.rstrip("/") + "/"):
            return str(mounts[target] / value[len(target.rstrip("/")) + 1 :])
    return value


def local_mounts(
    services: Mapping[str, Any], state_dir: Path, environ: Mapping[str, str] | None = None
) -> dict[str, Path]:
    """Each container mount point of any service -> <state_dir>/<its last path component>."""
    mounts: dict[str, Path] = {}
    for service in services.values():
        if isinstance(service, dict):
            for target in volume_targets(service.get("volumes"), environ):
                name = PurePosixPath(target).name
                mounts[target] = state_dir / LOCAL_FOLDERS.get(name, PurePosixPath(name))
    return mounts


def config_file_env_names(data: Any, prefix: str = ENV_PREFIX) -> set[str]:
    """The SOULSPOT_* names that the YAML config file's keys correspond to.

    `folder: {source_dir: x}` -> SOULSPOT_FOLDER__SOURCE_DIR; `state_dir: y` ->
    SOULSPOT_STATE_DIR. A nested section also covers its own name, so a whole-section
    variable is not set over the file either.
    """
    names: set[str] = set()
    if not isinstance(data, dict):
        return names
    for key, value in data.items():
        name = f"{prefix}{str(key).upper()}"
        names.add(name)
        if isinstance(value, dict):
            names |= config_file_env_names(value, f"{name}__")
    return names


@dataclass(frozen=True)
class LocalProcess:
    """One service of the plan, ready to start."""

    name: str
    argv: list[str]
    # Only the variables the plan sets; the process gets the calling environment plus these.
    env: dict[str, str]
    # Where its health is probed, and whether "answers, NOT_SERVING" counts as started.
    health_address: str | None
    serving_or_not: bool
    depends_on: list[str] = field(default_factory=list)
    # The gRPC address it listens on, as clients reach it.
    address: str | None = None

    @property
    def is_router(self) -> bool:
        return len(self.argv) >= 3 and self.argv[2] == ROUTER


@dataclass(frozen=True)
class StackPlan:
    state_dir: Path
    processes: list[LocalProcess]
    # Local folders that stand for the containers' volumes, by container path.
    mounts: dict[str, Path]
    skipped: dict[str, str]  # service -> why it is not a local process
    # Mount points of the planned services only (the folders `up` creates).
    used_mounts: list[str] = field(default_factory=list)

    def get(self, name: str) -> LocalProcess | None:
        return next((p for p in self.processes if p.name == name), None)

    @property
    def router(self) -> LocalProcess | None:
        return next((p for p in self.processes if p.is_router), None)

    def levels(self) -> list[list[LocalProcess]]:
        """Start order: each level depends only on earlier levels (compose depends_on)."""
        return start_levels(self.processes)


def start_levels(processes: list[LocalProcess]) -> list[list[LocalProcess]]:
    names = {p.name for p in processes}
    remaining = {p.name: {d for d in p.depends_on if d in names} for p in processes}
    done: set[str] = set()
    levels: list[list[LocalProcess]] = []
    while remaining:
        ready = [p for p in processes if p.name in remaining and remaining[p.name] <= done]
        if not ready:
            raise ComposeError(f"depends_on cycle among {sorted(remaining)}")
        levels.append(ready)
        for p in ready:
            del remaining[p.name]
            done.add(p.name)
    return levels


def plan_stack(
    compose: Mapping[str, Any],
    state_dir: Path,
    *,
    environ: Mapping[str, str],
    only: Iterable[str] = (),
    port_offset: int = 0,
    python: str = sys.executable,
    config_data: Any = None,
) -> StackPlan:
    """The local processes for the compose file's mesh services (see the module docstring).

    `only` restricts the plan to those services (unknown names raise ComposeError);
    `config_data` is the parsed YAML config file, whose settings the plan must not override.
    """
    services: dict[str, Any] = dict(compose.get("services") or {})
    state_dir = state_dir.resolve()
    # Mount points never depend on the caller: read them with every variable at its default.
    mounts = local_mounts(services, state_dir)
    wanted = [name for name in only if name]
    unknown = sorted(set(wanted) - set(services))
    if unknown:
        raise ComposeError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(services)}")
    keep_user = {k for k in environ if k.startswith(ENV_PREFIX)} | config_file_env_names(
        config_data
    )

    def translate(value: str) -> str:
        value = interpolate(value, environ)
        value = localize_addresses(value, services, port_offset)
        return localize_path(value, mounts)

    processes: list[LocalProcess] = []
    skipped: dict[str, str] = {}
    used_mounts: list[str] = []
    for name, service in services.items():
        if not isinstance(service, dict):
            raise ComposeError(f"service {name}: not a mapping")
        argv = _as_argv(service.get("command", []), name)
        module = mesh_module(argv)
        if wanted and name not in wanted:
            skipped[name] = "not in --only"
            continue
        if service.get("profiles"):
            skipped[name] = f"compose profile {', '.join(service['profiles'])}"
            continue
        if argv[1:3] == ["-m", PKI_INIT_MODULE]:
            skipped[name] = "certificates: `soulspot up` creates them itself"
            continue
        if module is None:
            skipped[name] = "not a `python -m router|services.*` command"
            continue
        for target in volume_targets(service.get("volumes")):
            if target not in used_mounts:
                used_mounts.append(target)
        env: dict[str, str] = {}
        for key, raw in _as_env(service.get("environment"), name).items():
            if key in keep_user:
                continue  # the user's own setting wins
            value = translate(raw)
            if value != "":
                env[key] = value
        health = healthcheck_args(service)
        health_address = None
        if HEALTHPROBE_MODULE in health:
            targets = [a for a in health if _HOST_PORT.match(a)]
            if targets:
                health_address = localize_addresses(targets[0], services, port_offset)
        listen_key = _address_key(module)
        listen = environ.get(listen_key) or env.get(listen_key)
        if listen and _HOST_PORT.match(listen):
            # Probe where the process really listens (the user may have moved it).
            listen = localize_addresses(listen, ())
            if health_address is not None:
                health_address = listen
        processes.append(
            LocalProcess(
                name=name,
                argv=[python if i == 0 else a for i, a in enumerate(argv)],
                env=env,
                health_address=health_address,
                serving_or_not=SERVING_OR_NOT in health,
                depends_on=_depends_on(service.get("depends_on")),
                address=listen,
            )
        )
    # The router first: every module announces itself to it.
    processes.sort(key=lambda p: not p.is_router)
    return StackPlan(state_dir, processes, mounts, skipped, used_mounts)


def _address_key(module: str) -> str:
    section = "ROUTER" if module == ROUTER else module.rpartition(".")[2].upper()
    return f"{ENV_PREFIX}{section}__ADDRESS"


def process_env(base: Mapping[str, str], process: LocalProcess) -> dict[str, str]:
    """The full environment of a local process: the caller's, then the plan's settings."""
    env = dict(base)
    env.update(process.env)
    return env


def router_http_address(plan: StackPlan) -> str | None:
    """The router's HTTP (dashboard) address from its plan environment, if it has one."""
    router = plan.router
    if router is None:
        return None
    for key, value in router.env.items():
        if key.endswith("HTTP_ADDRESS"):
            return value
    return None
