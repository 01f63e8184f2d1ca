"""How every command reports a user's mistake: one red line, exit code 2, no traceback."""

from __future__ import annotations

import typer
from rich.console import Console

err_console = Console(stderr=True, soft_wrap=True)


def fail(e: BaseException) -> typer.Exit:
    """Print ``Error: <message>`` and return the exit to raise (``raise fail(e) from None``)."""
    err_console.print(f"[red]Error: {e}[/red]", highlight=False)
    return typer.Exit(2)
