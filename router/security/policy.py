"""The router's authorization policy: who may register which capabilities, publish which event
types, and run admin operations.

Decisions take the caller's verified identity (services/kit/security/identity.py), never a
name the caller wrote into a request. The shipped defaults live in `policy.yaml` beside this
file; publishers come from the event contracts' own `producers` option plus the file's grants,
so what a contract says and what the router allows cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from router.bus.patterns import PatternSet, pattern_error
from services.kit.security.identity import CLI, ROUTER, Identity, Kind

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from services.kit.events.registry import EventRegistry

DEFAULT_POLICY_FILE = Path(__file__).with_name("policy.yaml")
# Bounds on what a policy file may say, so a typo cannot grant the unbounded.
MAX_PRIORITY = 1000


class PolicyError(ValueError):
    """The policy file is not valid; the message names the entry."""


@dataclass(frozen=True, slots=True)
class ModuleGrant:
    """What one module may register: capability -> the highest priority it may claim."""

    capabilities: Mapping[str, int]


def _producer_identity(name: str) -> Identity:
    """A contract's producer name as an identity: "router", "cli" or a module's name."""
    if name == ROUTER.name:
        return ROUTER
    if name == CLI.name:
        return CLI
    return Identity.module(name)


@dataclass(slots=True)
class Policy:
    """The decisions, loaded once at start."""

    modules: dict[str, ModuleGrant]
    # event type -> identities the contracts name as its producers
    producers: dict[str, frozenset[Identity]]
    # (patterns, identities) granted by the file beyond the contracts
    extra_publishers: list[tuple[PatternSet, frozenset[Identity]]]
    admins: frozenset[Identity]
    # Who may read the routes over xDS (ADS): identity kinds, by default every mesh kind.
    discovery_kinds: frozenset[Kind] = frozenset(Kind)
    # Who may add, remove, list and run playlist watches besides the admins: identity kinds,
    # by default clients (the command line); a module never needs to.
    playlist_watcher_kinds: frozenset[Kind] = frozenset({Kind.CLIENT})
    _publish_cache: dict[tuple[Identity, str], bool] = field(default_factory=dict)

    # -- registration ---------------------------------------------------------------------

    def registration_problems(
        self,
        caller: Identity,
        name: str,
        capabilities: Iterable[tuple[str, int]],
    ) -> dict[str, str]:
        """Why `caller` may not register as `name` with these capabilities: field -> reason
        (empty when it may)."""
        if caller.kind is not Kind.MODULE or caller.name != name:
            return {"announce.name": f"{caller.uri} may register only as itself, not as {name!r}"}
        grant = self.modules.get(name)
        problems: dict[str, str] = {}
        for index, (capability, priority) in enumerate(capabilities):
            allowed = None if grant is None else grant.capabilities.get(capability)
            where = f"announce.capabilities[{index}]"
            if allowed is None:
                problems[where] = (
                    f"{capability!r} is not granted to module {name!r} by the router's policy"
                )
            elif priority > allowed:
                problems[where] = (
                    f"priority {priority} for {capability!r} is above the {allowed} the "
                    f"policy grants module {name!r}"
                )
        return problems

    # -- publishing -----------------------------------------------------------------------

    def may_publish(self, caller: Identity, event_type: str) -> bool:
        key = (caller, event_type)
        hit = self._publish_cache.get(key)
        if hit is None:
            hit = caller in self.producers.get(event_type, frozenset()) or any(
                caller in who and patterns.matches(event_type)
                for patterns, who in self.extra_publishers
            )
            if len(self._publish_cache) < 4096:
                self._publish_cache[key] = hit
        return hit

    # -- admin ----------------------------------------------------------------------------

    def is_admin(self, caller: Identity | None) -> bool:
        return caller is not None and caller in self.admins

    # -- xDS ------------------------------------------------------------------------------

    def may_discover(self, caller: Identity) -> bool:
        return caller.kind in self.discovery_kinds

    # -- playlist watches -----------------------------------------------------------------

    def may_watch_playlists(self, caller: Identity) -> bool:
        return caller.kind in self.playlist_watcher_kinds or self.is_admin(caller)


def _identity(value: object, where: str) -> Identity:
    if not isinstance(value, str):
        raise PolicyError(f"{where}: expected an identity URI, got {value!r}")
    identity = Identity.parse(value)
    if identity is None:
        raise PolicyError(f"{where}: {value!r} is not a spiffe://soulspot/<kind>/<name> URI")
    return identity


def _modules(raw: object) -> dict[str, ModuleGrant]:
    if not isinstance(raw, dict):
        raise PolicyError("modules: expected a mapping of module name -> grants")
    out: dict[str, ModuleGrant] = {}
    for name, entry in raw.items():
        try:
            Identity.module(str(name))
        except ValueError as err:
            raise PolicyError(f"modules.{name}: {err}") from None
        caps = entry.get("capabilities", {}) if isinstance(entry, dict) else None
        if not isinstance(caps, dict):
            raise PolicyError(f"modules.{name}.capabilities: expected capability -> priority")
        grants: dict[str, int] = {}
        for capability, priority in caps.items():
            if not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
                raise PolicyError(
                    f"modules.{name}.capabilities.{capability}: priority must be an integer "
                    f"from 0 to {MAX_PRIORITY}"
                )
            grants[str(capability)] = priority
        out[str(name)] = ModuleGrant(grants)
    return out


def _publishers(raw: object) -> list[tuple[PatternSet, frozenset[Identity]]]:
    if not isinstance(raw, dict):
        raise PolicyError("publishers: expected a mapping of event-type pattern -> identities")
    out: list[tuple[PatternSet, frozenset[Identity]]] = []
    for pattern, who in raw.items():
        problem = pattern_error(str(pattern))
        if problem:
            raise PolicyError(f"publishers.{pattern}: {problem}")
        if not isinstance(who, list) or not who:
            raise PolicyError(f"publishers.{pattern}: expected a list of identity URIs")
        ids = frozenset(_identity(w, f"publishers.{pattern}") for w in who)
        out.append((PatternSet([str(pattern)]), ids))
    return out


def _kinds(raw: object, section: str) -> frozenset[Kind]:
    """A section that names identity kinds (`discovery`, `playlist_watchers`)."""
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise PolicyError(f"{section}: expected a list of identity kinds")
    try:
        return frozenset(Kind(k) for k in raw)
    except ValueError:
        known = ", ".join(k.value for k in Kind)
        raise PolicyError(f"{section}: identity kinds are {known}, got {raw!r}") from None


def load_policy(path: Path | None, registry: EventRegistry) -> Policy:
    """The policy in `path` (the shipped defaults when None), with the contracts' producers."""
    source = path or DEFAULT_POLICY_FILE
    try:
        raw: Any = yaml.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise PolicyError(f"{source}: {err}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: expected a mapping")
    producers: dict[str, set[Identity]] = {}
    for schema in registry.schemas():
        producers.setdefault(schema.event_type, set()).update(
            _producer_identity(p) for p in schema.producers
        )
    admins = raw.get("admins", [])
    if not isinstance(admins, list):
        raise PolicyError(f"{source}: admins: expected a list of identity URIs")
    try:
        policy = Policy(
            modules=_modules(raw.get("modules", {})),
            producers={k: frozenset(v) for k, v in producers.items()},
            extra_publishers=_publishers(raw.get("publishers") or {}),
            admins=frozenset(_identity(a, "admins") for a in admins),
        )
        # A section the file leaves out keeps the default Policy declares, written there only.
        if "discovery" in raw:
            policy.discovery_kinds = _kinds(raw["discovery"], "discovery")
        if "playlist_watchers" in raw:
            policy.playlist_watcher_kinds = _kinds(raw["playlist_watchers"], "playlist_watchers")
    except PolicyError as err:
        raise PolicyError(f"{source}: {err}") from None
    return policy
