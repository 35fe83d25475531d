"""A command's result as a table that fits the terminal, or as one JSON document.

Every command that prints a table goes through this module, so they all take the same
options and behave alike:

- `--output/-o table|wide|json`, with `--json` and `--wide` as shorthands (`OutputOption`,
  `JsonOption`, `WideOption`; `output_format()` resolves them, exit code 2 when they disagree);
- a table (`TableView`) declares its columns with a priority: 0 is always shown, higher
  numbers are dropped first when the terminal (rich's console width, which honours
  `COLUMNS`) is too narrow; what is left is truncated with an ellipsis, never wrapped, so each
  row stays one line. `wide` shows every column at full width;
- `--json` prints one JSON document on standard output (`print_result`) with snake_case
  field names; errors still go to standard error with a non-zero exit code.

In a command:

    def things(output: OutputOption = OutputFormat.TABLE, json_output: JsonOption = False,
               wide: WideOption = False, router: RouterOption = None) -> None:
        fmt = output_format(output, json_output=json_output, wide=wide)

        async def body(channel: grpc.aio.Channel) -> int:
            reply = await ...
            view = TableView("Things")
            view.add_column("name")                          # priority 0: always there
            view.add_column("detail", priority=1, min_width=12)
            view.add_column("since", priority=2)             # the first to go
            for t in reply.things:
                view.add_row(t.name, t.detail, local_time(t.since))
            print_result(fmt, {"things": [{"name": t.name, ...} for t in reply.things]}, [view])
            return 0

A `TableView` is also a rich renderable: `console.print(view)` fits it to the console.
"""

from __future__ import annotations

import enum
import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from cli.console import console as default_console
from cli.console import err_console

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from rich.console import Console, ConsoleOptions, JustifyMethod, RenderableType, RenderResult

__all__ = [
    "Cell",
    "Column",
    "JsonOption",
    "OutputFormat",
    "OutputOption",
    "TableView",
    "WideOption",
    "fit_widths",
    "output_format",
    "print_result",
]


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"


OutputOption = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        "-o",
        help="table (fits the terminal), wide (every column, full width) or json.",
        case_sensitive=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="One JSON document on standard output (-o json).")
]
WideOption = Annotated[bool, typer.Option("--wide", help="Every column, full width (-o wide).")]


def output_format(
    output: OutputFormat = OutputFormat.TABLE, *, json_output: bool = False, wide: bool = False
) -> OutputFormat:
    """The one format `-o`, `--json` and `--wide` ask for; exit code 2 when they disagree."""
    asked = {output} - {OutputFormat.TABLE}
    if json_output:
        asked.add(OutputFormat.JSON)
    if wide:
        asked.add(OutputFormat.WIDE)
    if len(asked) > 1:
        names = " and ".join(sorted(str(f) for f in asked))
        err_console.print(f"[red]choose one output format:[/] {names} were both asked for")
        raise typer.Exit(2)
    return asked.pop() if asked else OutputFormat.TABLE


# A cell: plain text (never read as markup: names and errors come from the mesh), or a rich
# Text when it is styled.
Cell = str | Text

# The box's lines: one left of each column and one at the right edge, plus one cell of
# padding on each side of each column.
_EDGE = 1
_PER_COLUMN = 3
# The narrowest a column is cut to when even the never-dropped columns do not fit.
_MIN_USEFUL = 3


@dataclass
class Column:
    header: str
    # 0: always shown; higher numbers are dropped first when the terminal is too narrow.
    priority: int = 0
    # Set for a column of long text: cut with an ellipsis down to this many cells before any
    # column is dropped. Without it the column is shown whole, or dropped.
    min_width: int | None = None
    justify: JustifyMethod = "left"
    style: str = ""


@dataclass
class TableView:
    """A table whose columns give way by priority; print it with `print_result` or
    `console.print(view)`."""

    title: str = ""
    columns: list[Column] = field(default_factory=list)
    rows: list[list[Text]] = field(default_factory=list)
    show_header: bool = True
    # Every column at full width, whatever the console's width.
    wide: bool = False

    def add_column(
        self,
        header: str,
        *,
        priority: int = 0,
        min_width: int | None = None,
        justify: JustifyMethod = "left",
        style: str = "",
    ) -> None:
        self.columns.append(Column(header, priority, min_width, justify, style))

    def add_row(self, *cells: Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([_one_line(cell) for cell in cells])

    def natural_widths(self) -> list[int]:
        widths = [cell_len(c.header) if self.show_header else 0 for c in self.columns]
        for row in self.rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], cell.cell_len)
        return widths

    def table(self, width: int | None) -> Table:
        """The rich Table: every column when `width` is None (or the view is wide), else the
        columns that fit in `width` cells, truncated to fit."""
        natural = self.natural_widths()
        widths: list[int | None] = (
            list(natural)
            if width is None or self.wide
            else fit_widths(self.columns, natural, width, show_header=self.show_header)
        )
        table = Table(
            title=self.title or None,
            show_header=self.show_header,
            box=box.HEAVY_HEAD,
            padding=(0, 1),
            expand=False,
        )
        kept = [i for i, w in enumerate(widths) if w is not None]
        for i in kept:
            column = self.columns[i]
            table.add_column(
                column.header,
                justify=column.justify,
                style=column.style or None,
                width=widths[i],
                no_wrap=True,
                overflow="ellipsis",
            )
        for row in self.rows:
            table.add_row(*(row[i] for i in kept))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)


def _one_line(cell: Cell) -> Text:
    text = cell.copy() if isinstance(cell, Text) else Text(cell)
    # A newline would make a row two lines tall.
    if "\n" in text.plain or "\r" in text.plain:
        text = Text(" ".join(text.plain.split()), style=text.style)
    return text


def fit_widths(
    columns: Sequence[Column], natural: Sequence[int], width: int, *, show_header: bool = True
) -> list[int | None]:
    """Each column's width in `width` cells, None for a dropped one.

    A column that declares a `min_width` gives up cells (its text is cut); the others are shown
    whole or not at all. Columns are dropped from the highest priority number down (the
    rightmost first among equals) until the rest fit, then the widest cut-able columns give up
    cells until the table fits. Priority 0 columns are never dropped: when even they do not
    fit, every column is cut, down to a few cells.
    """
    keep = list(range(len(columns)))
    header = [cell_len(c.header) if show_header else 0 for c in columns]
    flexible = {i for i, c in enumerate(columns) if c.min_width is not None}
    minimum = [
        min(natural[i], c.min_width if c.min_width is not None else natural[i])
        for i, c in enumerate(columns)
    ]

    def overhead(count: int) -> int:
        return _EDGE + _PER_COLUMN * count

    droppable = sorted(
        (i for i in keep if columns[i].priority > 0),
        key=lambda i: (columns[i].priority, i),
        reverse=True,
    )
    while sum(minimum[i] for i in keep) + overhead(len(keep)) > width and droppable:
        keep.remove(droppable.pop(0))

    widths = {i: natural[i] for i in keep}
    excess = sum(widths.values()) + overhead(len(keep)) - width
    excess = _shrink(widths, {i: minimum[i] for i in keep if i in flexible}, excess)
    if excess > 0:
        # Even the columns that are never dropped do not fit: cut them all.
        floor = {i: min(widths[i], max(_MIN_USEFUL, min(header[i], 8))) for i in keep}
        _shrink(widths, floor, excess)
    return [widths.get(i) for i in range(len(columns))]


def _shrink(widths: dict[int, int], floors: dict[int, int], excess: int) -> int:
    """Take up to `excess` cells from the columns in `floors`, widest first, none below its
    floor; what is still in excess."""
    while excess > 0:
        slack = {i: widths[i] - floor for i, floor in floors.items() if widths[i] > floor}
        if not slack:
            break
        widest = max(slack, key=lambda i: (widths[i], i))
        # Down to the next widest column's width at once, not one cell at a time.
        below = [widths[i] for i in slack if widths[i] < widths[widest]]
        step = min(excess, slack[widest], max(1, widths[widest] - max(below, default=0)))
        widths[widest] -= step
        excess -= step
    return excess


def print_result(
    fmt: OutputFormat,
    document: Any,
    views: Iterable[TableView | RenderableType],
    *,
    console: Console | None = None,
) -> None:
    """Print `document` as JSON (fmt json) or `views` as tables (and any other rich
    renderables among them, such as a closing line)."""
    out = console or default_console
    if fmt is OutputFormat.JSON:
        # Straight to the file: rich would wrap long lines and read brackets as markup.
        text = json.dumps(document, indent=2, ensure_ascii=False)
        file = out.file if console is not None else sys.stdout
        file.write(text + "\n")
        file.flush()
        return
    for view in views:
        if isinstance(view, TableView):
            if fmt is OutputFormat.WIDE:
                table = view.table(None)
                # Wider than the terminal on purpose (the terminal wraps the lines): rich
                # would squeeze it into the console's width, so the console widens for it.
                width = out.width
                out.width = max(
                    width, out.measure(table, options=out.options.update(width=10**6)).maximum
                )
                try:
                    out.print(table, crop=False)
                finally:
                    out.width = width
            else:
                out.print(view.table(out.width))
        else:
            out.print(view)
