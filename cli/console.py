"""Where the CLI prints: results on standard output, failures on standard error."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
