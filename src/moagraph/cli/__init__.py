"""`moagraph` command line. Each sub-command group lives in its own module."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="moagraph",
    help="Compute-optimal collaboration of several LLMs: evaluate, search, route, serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,  # help is plain text: Rich markup would eat `moagraph[ray]`
)


def _register() -> None:
    # Imported here so `moagraph --help` stays fast and each module owns its commands.
    from moagraph.cli import eval_cmd, pool_cmd, route_cmd, search_cmd, serve_cmd  # noqa: F401


def main() -> None:
    _register()
    app()
