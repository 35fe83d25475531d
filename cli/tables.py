"""The CLI's tables: status, events, dead letters, search results and playlist outcomes, as
TableViews (cli/output.py) built from the router's answers: each column with a priority, so
the table fits the terminal (printing is the commands' part)."""

from __future__ import annotations

import json
from datetime import UTC
from typing import TYPE_CHECKING

from google.protobuf import json_format
from rich.text import Text

from cli.output import TableView
from services.kit.events.client import unpack_payload
from services.kit.support.intervals import format_interval
from soulspot.common.v1 import module_pb2
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from google.protobuf import timestamp_pb2

    from soulspot.capabilities.v1 import search_pb2
    from soulspot.common.v1 import references_pb2
    from soulspot.events.v1 import envelope_pb2, playlist_pb2
    from soulspot.router.v1 import watches_pb2

_STATUS_STYLE = {"active": "green", "degraded": "yellow", "inactive": "red", "unknown": "dim"}
_OUTCOME_STYLE = {"downloaded": "green", "already_in_library": "cyan", "failed": "red"}
DEAD_LETTER_REASONS = {
    router_pb2.DEAD_LETTER_REASON_MAX_ATTEMPTS: "max attempts",
    router_pb2.DEAD_LETTER_REASON_CYCLE: "cycle",
    router_pb2.DEAD_LETTER_REASON_DEPTH: "depth",
}
# How much of a payload's JSON an events table cell holds (the table truncates it further to
# fit the terminal; `--json` prints it whole).
PAYLOAD_CELL_CHARS = 200


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


def _styled_status(value: int) -> Text:
    name = status_name(value)
    return Text(name, style=_STATUS_STYLE.get(name, "white"))


def _yes_no(value: bool) -> Text:
    return Text("yes", style="green") if value else Text("no", style="red")


def status_tables(reply: router_pb2.GetStatusResponse) -> list[TableView]:
    """Modules and capabilities always; warnings, work in flight and consumers when any."""
    modules = TableView("Modules")
    modules.add_column("module")
    modules.add_column("status")
    modules.add_column("reason", priority=1, min_width=30)
    modules.add_column("address", priority=2)
    modules.add_column("version", priority=3)
    modules.add_column("breaker", priority=4)
    modules.add_column("since", priority=5)
    for m in reply.modules:
        modules.add_row(
            m.name,
            _styled_status(m.status),
            m.reason,
            m.address,
            m.version,
            m.breaker,
            local_time(m.since),
        )
    tables = [modules]

    capabilities = TableView("Capabilities")
    capabilities.add_column("capability")
    capabilities.add_column("available")
    capabilities.add_column("providers (in routing order)", priority=1, min_width=30)
    for c in reply.capabilities:
        providers = ", ".join(
            f"{p.module} ({p.priority}, {status_name(p.status)}"
            + ("" if p.routable else ", not routable")
            + ")"
            for p in c.providers
        )
        capabilities.add_row(c.name, _yes_no(c.available), providers or "-")
    tables.append(capabilities)

    if reply.warnings:
        warnings = TableView("Warnings")
        warnings.add_column("module")
        warnings.add_column("operation", priority=2)
        warnings.add_column("status")
        warnings.add_column("impact", priority=1, min_width=20)
        warnings.add_column("action", priority=3, min_width=12)
        for w in reply.warnings:
            warnings.add_row(w.module, w.operation, w.status, w.impact, w.action)
        tables.append(warnings)

    if reply.in_flight:
        work = TableView("In flight")
        work.add_column("kind")
        work.add_column("id", priority=3)
        work.add_column("what", min_width=12)
        work.add_column("started", priority=2)
        work.add_column("progress", priority=1, justify="right")
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
        tables.append(consumers_table(list(reply.consumers)))

    if reply.watched_playlists:
        tables.append(watched_playlists_table(list(reply.watched_playlists)))

    if reply.xds_clients:
        tables.append(xds_clients_table(list(reply.xds_clients)))
    return tables


def xds_clients_table(clients: list[router_pb2.XdsClient]) -> TableView:
    """Proxyless clients on the router's xDS: who, and per type the version sent and ACKed
    (`ACKed/sent`), with the last NACK's error."""
    table = TableView("xDS clients")
    table.add_column("node", min_width=12)
    table.add_column("peer", priority=3)
    table.add_column("since", priority=4)
    table.add_column("versions (acked/sent)", priority=1, min_width=16)
    table.add_column("last NACK", priority=2, min_width=12)
    for client in clients:
        versions = ", ".join(
            f"{s.type} {s.acked_version or '-'}/{s.sent_version or '-'}"
            for s in client.subscriptions
        )
        nacks = "; ".join(f"{s.type}: {s.last_nack}" for s in client.subscriptions if s.last_nack)
        table.add_row(
            client.node_id or "-",
            client.peer,
            local_time(client.connected_at),
            versions or "-",
            Text(nacks, style="red") if nacks else "-",
        )
    return table


def consumers_table(consumers: list[router_pb2.ConsumerInfo]) -> TableView:
    """The bus's durable consumers: what they take, how far they are, who reads them."""
    table = TableView("Event consumers")
    table.add_column("consumer", min_width=12)
    table.add_column("events", priority=2, min_width=8)
    table.add_column("acked", priority=4, justify="right")
    table.add_column("lag", justify="right")
    table.add_column("subscribers", priority=3, justify="right")
    table.add_column("in flight", priority=1, justify="right")
    # Routers sharing JetStream name the router serving each consumer (its subscribers
    # connect there); a lone router leaves it empty, and the column out.
    served = any(consumer.served_by for consumer in consumers)
    if served:
        table.add_column("served by", priority=5)
    for consumer in consumers:
        cells = [
            consumer.name,
            ", ".join(consumer.event_types),
            str(consumer.acked_sequence),
            str(consumer.lag),
            str(consumer.subscribers),
            str(consumer.in_flight),
        ]
        table.add_row(*cells, *([consumer.served_by] if served else []))
    return table


def watched_playlists_table(watches: list[watches_pb2.PlaylistWatch]) -> TableView:
    """Playlists the router re-syncs on a schedule: every how long, next run, last result."""
    table = TableView("Watched playlists")
    table.add_column("playlist", min_width=12)
    table.add_column("name", priority=1)
    table.add_column("every", priority=2)
    table.add_column("next run", priority=3)
    table.add_column("last run", priority=5)
    table.add_column("last result", priority=1, min_width=12)
    table.add_column("known", priority=4, justify="right")
    for w in watches:
        result = Text(w.last_result, style="red") if w.last_run_failed else w.last_result
        table.add_row(
            w.playlist_id,
            w.name,
            format_interval(w.every.ToTimedelta().total_seconds()),
            "running" if w.running else local_time(w.next_run_at),
            local_time(w.last_run_at) or "-",
            result or "-",
            str(w.tracks_known),
        )
    return table


# -- the event log and dead letters -----------------------------------------------------------


def events_table(events: list[envelope_pb2.EventEnvelope], title: str) -> TableView:
    table = TableView(title)
    table.add_column("seq", justify="right")
    table.add_column("stored at", priority=2)
    table.add_column("type", style="cyan")
    table.add_column("source", priority=3)
    table.add_column("subject", priority=4, min_width=10)
    table.add_column("correlation", priority=5)
    table.add_column("payload", priority=1, min_width=20)
    for env in events:
        table.add_row(
            str(env.sequence),
            local_time(env.stored_at),
            env.event_type,
            env.source_module,
            env.subject,
            env.correlation_id[:12],
            payload_summary(env, PAYLOAD_CELL_CHARS),
        )
    return table


def dead_letters_table(letters: list[router_pb2.DeadLetter]) -> TableView:
    table = TableView(f"dead letters ({len(letters)})")
    table.add_column("id", justify="right")
    table.add_column("parked at", priority=4)
    table.add_column("consumer", priority=1, min_width=10)
    table.add_column("reason", priority=2)
    table.add_column("attempts", priority=3, justify="right")
    table.add_column("type")
    table.add_column("seq", priority=5, justify="right")
    table.add_column("error", priority=1, min_width=20)
    for dl in letters:
        table.add_row(
            str(dl.dead_letter_id),
            local_time(dl.parked_at),
            dl.consumer or Text("(cycle guard)", style="dim"),
            DEAD_LETTER_REASONS.get(dl.reason, "?"),
            str(dl.attempts),
            dl.event.event_type,
            str(dl.event.sequence),
            dl.last_error,
        )
    return table


def dead_letter_table(dl: router_pb2.DeadLetter) -> TableView:
    """One dead letter: why it is parked and its envelope (the payload is printed apart)."""
    env = dl.event
    table = TableView(f"dead letter {dl.dead_letter_id}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", min_width=12)
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


def search_results_table(results: list[search_pb2.SearchResult]) -> TableView:
    table = TableView("Search results")
    table.add_column("#", justify="right")
    table.add_column("artist", min_width=8)
    table.add_column("title", min_width=8)
    table.add_column("album", priority=2)
    table.add_column("score", priority=3, justify="right")
    table.add_column("source", priority=1)
    table.add_column("in library", priority=1)
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
) -> TableView:
    table = TableView("Playlist sync")
    table.add_column("#", justify="right")
    table.add_column("track", min_width=12)
    table.add_column("outcome")
    table.add_column("detail", priority=1, min_width=12)
    table.add_column("worker", priority=2)
    for position, track in tracks:
        result = results.get(position)
        outcome = result.outcome if result else "not handled"
        table.add_row(
            str(position),
            describe_track(track),
            Text(outcome, style=_OUTCOME_STYLE.get(outcome, "yellow")),
            result.detail if result else "",
            result.worker if result else "",
        )
    return table
