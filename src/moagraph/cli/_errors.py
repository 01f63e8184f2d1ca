"""How every command reports a user's mistake: one red line, exit code 2, no traceback."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

err_console = Console(stderr=True, soft_wrap=True)


def fail(e: BaseException, code: int = 2) -> typer.Exit:
    """Print ``Error: <message>`` and return the exit to raise (``raise fail(e) from None``).

    ``code`` 2 is a usage error (the default); commands use 1 when the input was fine
    but the work failed (e.g. every query of an evaluation errored). An ``OSError``
    without a message of its own is shown with its file name.
    """
    msg = str(e)
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in msg:
        msg = f"{msg}: {e.filename}"
    # escape(): messages carry user text and install hints like `pip install 'moagraph[local]'`,
    # whose brackets Rich would otherwise swallow as markup.
    err_console.print(f"[red]Error: {escape(msg or type(e).__name__)}[/red]", highlight=False)
    return typer.Exit(code)
