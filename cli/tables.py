"""The CLI's tables: status, events, dead letters, search results and playlist outcomes, as
rich tables built from the router's answers (printing is the commands' part)."""

from __future__ import annotations

import json
from datetime import UTC
from typing import TYPE_CHECKING

from google.protobuf import json_format
from rich.table import Table

from services.kit.events.client import unpack_payload
from soulspot.common.v1 import module_pb2
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from google.protobuf import timestamp_pb2

    from soulspot.capabilities.v1 import search_pb2
    from soulspot.common.v1 import references_pb2
    from soulspot.events.v1 import envelope_pb2, playlist_pb2

_STATUS_STYLE = {"active": "green", "degraded": "yellow", "inactive": "red", "unknown": "dim"}
_OUTCOME_STYLE = {"downloaded": "green", "already_in_library": "cyan", "failed": "red"}
DEAD_LETTER_REASONS = {
    router_pb2.DEAD_LETTER_REASON_MAX_ATTEMPTS: "max attempts",
    router_pb2.DEAD_LETTER_REASON_CYCLE: "cycle",
    router_pb2.DEAD_LETTER_REASON_DEPTH: "depth",
}


def local_time(ts: timestamp_pb2.Timestamp) -> str:
    """A timestamp in local time to the second; "" when unset."""
    if not ts.seconds and not ts.nanos:
        return ""
    return ts.ToDatetime(tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def describe_track(track: references_pb2.TrackReference) -> str:
    return f"{track.artist} - {track.title}" if track.artist else track.title


def payload_summary(env: envelope_pb2.EventEnvelope, width: int = 80) -> str:
    """The payload as compact JSON, cut to fit a table cell."""
    try:
        payload = unpack_payload(env)
    except Exception:
        return f"<{env.payload.type_url}>"
    text = json.dumps(json_format.MessageToDict(payload), separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


# -- status -----------------------------------------------------------------------------------


def status_name(value: int) -> str:
    name = module_pb2.ModuleStatus.Name(value)  # type: ignore[arg-type]
    return name.removeprefix("MODULE_STATUS_").lower()


def _styled_status(value: int) -> str:
    name = status_name(value)
    return f"[{_STATUS_STYLE.get(name, 'white')}]{name}[/]"


def status_tables(reply: router_pb2.GetStatusResponse) -> list[Table]:
    """Modules and capabilities always; warnings, work in flight and consumers when any."""
    modules = Table(title="Modules")
    for column in ("module", "status", "reason", "address", "breaker", "since", "version"):
        modules.add_column(column)
    for m in reply.modules:
        modules.add_row(
            m.name,
            _styled_status(m.status),
            m.reason,
            m.address,
            m.breaker,
            local_time(m.since),
            m.version,
        )
    tables = [modules]

    capabilities = Table(title="Capabilities")
    for column in ("capability", "available", "providers (in routing order)"):
        capabilities.add_column(column)
    for c in reply.capabilities:
        providers = ", ".join(
            f"{p.module} ({p.priority}, {status_name(p.status)}"
            + ("" if p.routable else ", not routable")
            + ")"
            for p in c.providers
        )
        capabilities.add_row(
            c.name, "[green]yes[/]" if c.available else "[red]no[/]", providers or "-"
        )
    tables.append(capabilities)

    if reply.warnings:
        warnings = Table(title="Warnings")
        for column in ("module", "operation", "status", "impact", "action"):
            warnings.add_column(column)
        for w in reply.warnings:
            warnings.add_row(w.module, w.operation, w.status, w.impact, w.action)
        tables.append(warnings)

    if reply.in_flight:
        work = Table(title="In flight")
        for column in ("kind", "id", "what", "started", "progress"):
            work.add_column(column)
        for item in reply.in_flight:
            work.add_row(
                item.kind,
                item.id[:12],
                item.description,
                local_time(item.started_at),
                f"{item.percent:.0f}%" if item.percent else "",
            )
        tables.append(work)

    if reply.consumers:
        consumers = Table(title="Event consumers")
        for column in ("consumer", "events", "acked", "lag", "subscribers", "in flight"):
            consumers.add_column(column)
        for consumer in reply.consumers:
            consumers.add_row(
                consumer.name,
                ", ".join(consumer.event_types),
                str(consumer.acked_sequence),
                str(consumer.lag),
                str(consumer.subscribers),
                str(consumer.in_flight),
            )
        tables.append(consumers)
    return tables


# -- the event log and dead letters -----------------------------------------------------------


def events_table(events: list[envelope_pb2.EventEnvelope], title: str) -> Table:
    table = Table(title=title)
    table.add_column("seq", justify="right")
    table.add_column("stored at")
    table.add_column("type", style="cyan")
    table.add_column("source")
    table.add_column("subject")
    table.add_column("correlation")
    table.add_column("payload", overflow="fold")
    for env in events:
        table.add_row(
            str(env.sequence),
            local_time(env.stored_at),
            env.event_type,
            env.source_module,
            env.subject,
            env.correlation_id[:12],
            payload_summary(env),
        )
    return table


def dead_letters_table(letters: list[router_pb2.DeadLetter]) -> Table:
    table = Table(title=f"dead letters ({len(letters)})")
    for column in ("id", "parked at", "consumer", "reason", "attempts", "type", "seq", "error"):
        table.add_column(column, overflow="fold")
    for dl in letters:
        table.add_row(
            str(dl.dead_letter_id),
            local_time(dl.parked_at),
            dl.consumer or "[dim](cycle guard)[/]",
            DEAD_LETTER_REASONS.get(dl.reason, "?"),
            str(dl.attempts),
            dl.event.event_type,
            str(dl.event.sequence),
            dl.last_error,
        )
    return table


def dead_letter_table(dl: router_pb2.DeadLetter) -> Table:
    """One dead letter: why it is parked and its envelope (the payload is printed apart)."""
    env = dl.event
    table = Table(show_header=False, title=f"dead letter {dl.dead_letter_id}")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("consumer", dl.consumer or "(cycle guard)"),
        ("reason", DEAD_LETTER_REASONS.get(dl.reason, "?")),
        ("attempts", str(dl.attempts)),
        ("last error", dl.last_error),
        ("parked at", local_time(dl.parked_at)),
        ("event id", env.event_id),
        ("type", f"{env.event_type} {env.schema_version}"),
        ("sequence", str(env.sequence)),
        ("source", env.source_module),
        ("correlation", env.correlation_id),
        (
            "causation",
            " -> ".join(f"{h.event_type}@{h.source_module}" for h in env.causation_chain),
        ),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


# -- flows ------------------------------------------------------------------------------------


def search_results_table(results: list[search_pb2.SearchResult]) -> Table:
    table = Table(title="Search results")
    for column in ("#", "artist", "title", "album", "score", "source", "in library"):
        table.add_column(column)
    for number, result in enumerate(results, 1):
        t = result.track
        table.add_row(
            str(number),
            t.artist,
            t.title,
            t.album,
            f"{result.score:.2f}",
            result.source,
            "yes" if result.in_library else "",
        )
    return table


def playlist_outcomes_table(
    tracks: list[tuple[int, references_pb2.TrackReference]],
    results: dict[int, playlist_pb2.PlaylistTrackHandled],
) -> Table:
    table = Table(title="Playlist sync")
    for column in ("#", "track", "outcome", "detail", "worker"):
        table.add_column(column)
    for position, track in tracks:
        result = results.get(position)
        outcome = result.outcome if result else "not handled"
        table.add_row(
            str(position),
            describe_track(track),
            f"[{_OUTCOME_STYLE.get(outcome, 'yellow')}]{outcome}[/]",
            result.detail if result else "",
            result.worker if result else "",
        )
    return table
