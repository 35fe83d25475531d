"""Tables that fit the terminal (columns dropped by priority, cells cut with an ellipsis, one
line per row), `-o wide`, and `--json` documents."""

from __future__ import annotations

import io
import json

import pytest
import typer
from google.protobuf import any_pb2, timestamp_pb2
from rich.console import Console

from cli.documents import dead_letter_document, event_document, status_document
from cli.output import Column, OutputFormat, TableView, fit_widths, output_format, print_result
from cli.tables import dead_letters_table, events_table, status_tables
from soulspot.common.v1 import module_pb2, references_pb2
from soulspot.events.v1 import download_pb2 as download_events_pb2
from soulspot.events.v1 import envelope_pb2
from soulspot.router.v1 import router_pb2

LONG = (
    "the slskd server at http://slskd.internal:5030 refused the API key;"
    " set SOULSPOT_SOULSEEK__API_KEY"
)
AT = timestamp_pb2.Timestamp(seconds=1_767_225_600)  # 2026-01-01T00:00:00Z


def _render(fmt: OutputFormat, views: list[TableView], width: int) -> str:
    out = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    print_result(fmt, {"unused": True}, views, console=out)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return text


def _status() -> router_pb2.GetStatusResponse:
    reply = router_pb2.GetStatusResponse(last_sequence=42, dead_letters=1, started_at=AT)
    for n, name in enumerate(("spotify", "soulseek", "folder", "metadata", "library")):
        reply.modules.add(
            name=name,
            status=module_pb2.MODULE_STATUS_INACTIVE if n < 2 else module_pb2.MODULE_STATUS_ACTIVE,
            reason=LONG if n < 2 else "serving",
            address=f"127.0.0.1:5006{n}",
            breaker="closed",
            since=AT,
            version="0.1.0+g1234567",
        )
    capability = reply.capabilities.add(name="download.track", available=True)
    capability.providers.add(
        module="soulseek", priority=10, status=module_pb2.MODULE_STATUS_INACTIVE
    )
    capability.providers.add(
        module="folder", priority=5, status=module_pb2.MODULE_STATUS_ACTIVE, routable=True
    )
    reply.warnings.add(
        module="soulseek",
        operation="download.track",
        status="UNAVAILABLE",
        impact="downloads fall back to the folder source, which holds only local files",
        action="start slskd or set SOULSPOT_SOULSEEK__URL",
    )
    reply.consumers.add(
        name="pipeline-download-completed",
        event_types=["download.completed", "download.failed", "metadata.enriched"],
        acked_sequence=40,
        lag=2,
        subscribers=1,
        in_flight=1,
    )
    return reply


def _event(sequence: int) -> envelope_pb2.EventEnvelope:
    payload = any_pb2.Any()
    payload.Pack(
        download_events_pb2.DownloadCompleted(
            download_id=f"dl-{sequence}",
            track=references_pb2.TrackReference(
                title="Harbour Lights", artist="The Paper Lanterns"
            ),
            file=references_pb2.FileReference(path="/srv/music/downloads/" + "x" * 120 + ".flac"),
        )
    )
    return envelope_pb2.EventEnvelope(
        event_id=f"ev-{sequence}",
        event_type="download.completed",
        schema_version="1.0.0",
        sequence=sequence,
        stored_at=AT,
        source_module="folder",
        subject="/srv/music/downloads/The Paper Lanterns/Night Ferry/01 - Harbour Lights.flac",
        correlation_id="c0ffee" * 6,
        payload=payload,
    )


def _rows(text: str, marker: str) -> list[str]:
    return [line for line in text.splitlines() if marker in line]


def _assert_one_line_rows(text: str, width: int) -> None:
    """No line wider than `width`, and no row continued on a second line (a continuation
    line has an empty first cell; every first cell in these tables has text)."""
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    for line in lines:
        if line.startswith("│"):
            first_cell = line[1 : line.index("│", 1)]
            assert first_cell.strip(), f"a wrapped row: {line!r}"


def test_status_fits_80_columns_one_line_per_row() -> None:
    text = _render(OutputFormat.TABLE, status_tables(_status()), 80)
    _assert_one_line_rows(text, 80)
    # Each module is one row of one line: its long reason is cut, not wrapped.
    for name in ("folder", "metadata", "library"):
        assert len(_rows(text, f"│ {name} ")) == 1
    module_rows = [line for line in text.splitlines() if line.startswith("│ spotify")]
    assert len(module_rows) == 1
    assert "…" in module_rows[0]
    assert len([line for line in text.splitlines() if line.startswith("│ soulseek ")]) == 2
    # The least important columns gave way; the important ones stayed.
    assert "since" not in text
    assert "reason" in text


def test_status_shows_every_column_at_200_columns() -> None:
    text = _render(OutputFormat.TABLE, status_tables(_status()), 200)
    _assert_one_line_rows(text, 200)
    for header in ("module", "status", "reason", "address", "version", "breaker", "since"):
        assert header in text
    for header in ("events", "acked", "lag", "subscribers", "in flight"):
        assert header in text
    assert LONG in text
    assert max(len(line) for line in text.splitlines()) <= 200


def test_events_list_fits_80_columns() -> None:
    view = events_table([_event(n) for n in range(1, 6)], "events (5)")
    text = _render(OutputFormat.TABLE, [view], 80)
    _assert_one_line_rows(text, 80)
    rows = _rows(text, "download.completed")
    assert len(rows) == 5  # one line each: the payload is cut, not folded
    wide = _render(OutputFormat.TABLE, [view], 200)
    for header in ("seq", "stored at", "type", "source", "subject", "correlation", "payload"):
        assert header in wide


def test_wide_shows_every_column_uncut_whatever_the_width() -> None:
    text = _render(OutputFormat.WIDE, status_tables(_status()), 80)
    assert "since" in text
    assert LONG in text
    assert "…" not in text


def test_dead_letters_fit_80_columns() -> None:
    letter = router_pb2.DeadLetter(
        dead_letter_id=7,
        consumer="library-import",
        reason=router_pb2.DEAD_LETTER_REASON_MAX_ATTEMPTS,
        attempts=5,
        last_error=LONG,
        parked_at=AT,
        event=_event(3),
    )
    text = _render(OutputFormat.TABLE, [dead_letters_table([letter])], 80)
    _assert_one_line_rows(text, 80)
    assert len(_rows(text, "download.completed")) == 1


def test_columns_are_dropped_from_the_highest_priority_number() -> None:
    columns = [Column("a"), Column("b", priority=2), Column("c", priority=1), Column("d", 3)]
    natural = [10, 10, 10, 10]
    assert fit_widths(columns, natural, 200) == [10, 10, 10, 10]
    # 4 columns need 1 + 4*3 + 40 = 53 cells: at 40 "d" goes, at 30 "b" too.
    assert fit_widths(columns, natural, 40) == [10, 10, 10, None]
    assert fit_widths(columns, natural, 30) == [10, None, 10, None]
    # Priority 0 is never dropped: too narrow for it, it is squeezed to its minimum.
    assert fit_widths(columns, natural, 5)[0] == 3


def test_long_columns_are_cut_to_fit_rather_than_dropped() -> None:
    columns = [Column("id"), Column("text", priority=1, min_width=10)]
    widths = fit_widths(columns, [4, 500], 80)
    assert widths[0] == 4
    assert widths[1] is not None
    assert 1 + 2 * 3 + 4 + widths[1] == 80


def test_newlines_in_cells_keep_rows_one_line() -> None:
    view = TableView("t")
    view.add_column("k")
    view.add_column("v", priority=1)
    view.add_row("a", "first line\nsecond line")
    text = _render(OutputFormat.TABLE, [view], 80)
    assert len(_rows(text, "first line second line")) == 1


def test_json_is_one_document_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    print_result(OutputFormat.JSON, status_document(_status()), status_tables(_status()))
    out = capsys.readouterr().out
    document = json.loads(out)  # one document, nothing else
    # Sections are only ever added: these stay.
    assert {
        "capabilities",
        "consumers",
        "dead_letters",
        "in_flight",
        "last_sequence",
        "modules",
        "started_at",
        "warnings",
        "watched_playlists",
    } <= set(document)
    spotify = document["modules"][0]
    assert spotify == {
        "name": "spotify",
        "status": "inactive",
        "reason": LONG,
        "address": "127.0.0.1:50060",
        "breaker": "closed",
        "since": "2026-01-01T00:00:00.000Z",
        "version": "0.1.0+g1234567",
    }
    assert document["capabilities"][0]["providers"][1] == {
        "module": "folder",
        "priority": 5,
        "status": "active",
        "routable": True,
    }
    assert document["consumers"][0]["lag"] == 2
    assert document["last_sequence"] == 42


def test_event_and_dead_letter_documents_carry_the_payload() -> None:
    event = event_document(_event(9))
    assert event["sequence"] == 9
    assert event["payload_type"] == "soulspot.events.v1.DownloadCompleted"
    assert event["payload"]["download_id"] == "dl-9"
    assert event["payload"]["track"]["title"] == "Harbour Lights"
    letter = dead_letter_document(
        router_pb2.DeadLetter(
            dead_letter_id=1, reason=router_pb2.DEAD_LETTER_REASON_CYCLE, event=_event(1)
        )
    )
    assert (letter["reason"], letter["parked_at"], letter["event"]["event_id"]) == (
        "cycle",
        None,
        "ev-1",
    )


def test_output_flags_resolve_to_one_format() -> None:
    assert output_format() is OutputFormat.TABLE
    assert output_format(json_output=True) is OutputFormat.JSON
    assert output_format(wide=True) is OutputFormat.WIDE
    assert output_format(OutputFormat.JSON) is OutputFormat.JSON
    assert output_format(OutputFormat.WIDE, wide=True) is OutputFormat.WIDE
    with pytest.raises(typer.Exit) as raised:
        output_format(OutputFormat.WIDE, json_output=True)
    assert raised.value.exit_code == 2
