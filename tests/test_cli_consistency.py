"""The command line as one whole: a flag means one thing in every command, and --help
shows every option's help as written.

The canonical table is ``moagraph.cli._options.FLAGS``; this test walks the whole
command tree (every command and sub-group) and holds each one to it.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from moagraph.cli import _register, app
from moagraph.cli._options import FLAGS

_register()
ROOT = typer.main.get_command(app)
runner = CliRunner()


def _commands(cmd: Any = ROOT, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


COMMANDS = [(p, c) for p, c in _commands() if p]
LEAVES = [(p, c) for p, c in COMMANDS if not hasattr(c, "commands")]
COMPLETION = {"--install-completion", "--show-completion"}  # typer's own, on the root only


def _visible(cmd: Any) -> list[Any]:
    return [
        p for p in cmd.params if not getattr(p, "hidden", False) and not (set(p.opts) & COMPLETION)
    ]


def _base_type(p: Any) -> Any:
    t = p.type_descriptor.annotation
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if typing.get_origin(t) in (typing.Union, __import__("types").UnionType):
        assert len(args) == 1, (p.opts, t)
        return args[0]
    return t


def test_the_tree_is_what_this_test_walks() -> None:
    names = {" ".join(p) for p, _ in LEAVES}
    assert {"eval", "draw", "search", "report", "record", "serve"} <= names
    assert {"pool show", "pool extend", "pool quantize", "pool import jsonl"} <= names
    assert {"route train", "route eval"} <= names


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_option_and_argument_has_help(path: tuple[str, ...], cmd: Any) -> None:
    assert (cmd.help or "").strip(), f"moagraph {' '.join(path)} has no help"
    for p in _visible(cmd):
        assert (getattr(p, "help", None) or "").strip(), (
            f"moagraph {' '.join(path)} {'/'.join(p.opts)}: no help"
        )


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize(("path", "cmd"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_help_renders_every_bracket_as_written(path: tuple[str, ...], cmd: Any) -> None:
    """Rich markup used to eat `[ray]` in "pip install 'moagraph[ray]'" (and any [...])."""
    res = runner.invoke(app, [*path, "--help"], terminal_width=100)
    assert res.exit_code == 0, res.output
    shown = _squash(res.output)
    texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in _visible(cmd)]
    brackets = [b for t in texts for b in re.findall(r"\[[^\[\]]*\]", t)]
    for b in brackets:
        assert _squash(b) in shown, f"moagraph {' '.join(path)} --help lost {b!r}"
    for p in _visible(cmd):  # and every option is listed
        assert p.opts[0] in res.output or p.param_type_name == "argument"


def test_ray_help_keeps_the_extra_name() -> None:
    for cmd in (["eval"], ["search"], ["record"]):
        res = runner.invoke(app, [*cmd, "--help"], terminal_width=200)
        assert "moagraph[ray]" in _squash(res.output), cmd


def test_shared_flags_have_one_definition() -> None:
    """Every option named in FLAGS has its names (short flag included), a type it allows,
    and help that starts with the shared text, in every command."""
    seen: dict[str, list[str]] = {}
    for path, cmd in LEAVES:
        for p in _visible(cmd):
            if p.param_type_name != "option":
                continue
            long = next((o for o in p.opts + p.secondary_opts if o.startswith("--")), None)
            flag = FLAGS.get(long or "")
            if flag is None:
                continue
            where = f"moagraph {' '.join(path)} {long}"
            assert set(p.opts) == set(flag.names), f"{where}: names {p.opts} != {flag.names}"
            assert _base_type(p) in flag.types, f"{where}: type {_base_type(p)} not in {flag.types}"
            assert (p.help or "").startswith(flag.help), f"{where}: help is not the shared one"
            seen.setdefault(long or "", []).append(" ".join(path))
    # the table is used, not decorative: the main shared flags appear in several commands
    for name in ("--pool", "--task", "--out", "--n", "--cache", "--budget", "--dry-run", "--ray"):
        assert len(seen.get(name, [])) >= 2, (name, seen.get(name))


def test_a_short_flag_means_one_long_flag_everywhere() -> None:
    short_to_long: dict[str, set[str]] = {}
    for _, cmd in LEAVES:
        for p in _visible(cmd):
            longs = [o for o in p.opts if o.startswith("--")]
            for s in (o for o in p.opts if not o.startswith("--")):
                short_to_long.setdefault(s, set()).update(longs)
    clash = {s: ls for s, ls in short_to_long.items() if len(ls) > 1}
    assert not clash, clash
    assert short_to_long["-o"] == {"--out"} and short_to_long["-n"] == {"--n"}
    assert short_to_long["-p"] == {"--pool"} and short_to_long["-t"] == {"--task"}


def test_a_long_flag_has_one_type_everywhere() -> None:
    """Outside FLAGS too: the same long name is read as the same type in every command
    (a repeatable list of it counts as the same)."""
    types: dict[str, set[Any]] = {}
    for _, cmd in LEAVES:
        for p in _visible(cmd):
            if p.param_type_name != "option" or p.opts[0] in FLAGS:
                continue
            t = _base_type(p)
            types.setdefault(p.opts[0], set()).add(
                typing.get_args(t)[0] if typing.get_args(t) else t
            )
    mixed = {n: ts for n, ts in types.items() if len(ts) > 1}
    assert not mixed, mixed


# --- the shared grammar behaves the same where it appears -----------------------------


def test_budget_paper_rule_resolves_as_search_computes_it() -> None:
    import moagraph
    from moagraph.search.space import SearchSpace

    pool, task = moagraph.load_pool("local"), moagraph.get_task("gsm8k")
    want = SearchSpace.from_pool(pool, task, budget=None).paper_budget(4)
    res = runner.invoke(app, ["eval", "--graph", "vote3", "--budget", "paper:4", "--dry-run"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert f"budget per query: {want:.3g} normalised FLOPs (paper:4); the graph fits it" in out
    res = runner.invoke(app, ["eval", "--graph", "vote3", "--budget", "1.5", "--dry-run"])
    assert "the graph is over it" in " ".join(res.output.split())  # vote3 plans 3 calls


def test_serve_takes_the_same_budget_grammar(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    import moagraph
    from moagraph.search.space import SearchSpace

    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)  # parse and build, no socket
    pool, task = moagraph.load_pool("local"), moagraph.get_task("chat")
    want = SearchSpace.from_pool(pool, task, budget=None).paper_budget(8)
    res = runner.invoke(app, ["serve", "--budget", "paper:8", "-p", "local", "-t", "chat"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert f"budget: {want:.4g} normalised FLOPs per request (paper:8)" in out
    res = runner.invoke(app, ["serve", "--budget-flops", "7"])  # the old spelling
    assert res.exit_code == 0 and "budget: 7 normalised FLOPs" in " ".join(res.output.split())
    assert "--budget-flops is deprecated; use --budget" in res.output
    res = runner.invoke(app, ["serve", "--budget", "cheap"])
    assert res.exit_code == 2 and "--budget 'cheap'" in res.output


def test_search_o_is_out_and_n_is_not_iterations_any_more(tmp_path: Path) -> None:
    res = runner.invoke(app, ["search", "-o", "random", "--dry-run"])
    assert res.exit_code == 2 and "--optimizer random" in " ".join(res.output.split())
    args = ["search", "--optimizer", "random", "--budget", "4", "--study", str(tmp_path / "s")]
    res = runner.invoke(app, [*args, "-n", "3", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "search -n is deprecated; use --iterations" in res.output


def test_deprecated_spellings_are_hidden() -> None:
    for cmd, old in (
        (["eval"], "--budget-flops"),
        (["serve"], "--budget-flops"),
        (["search"], "-n"),
        (["route", "train"], "--cache"),
        (["route", "eval"], "--cache"),
        (["pool", "import", "jsonl"], "--models"),
    ):
        res = runner.invoke(app, [*cmd, "--help"], terminal_width=200)
        assert not re.search(rf"(^|\s){re.escape(old)}[\s,]", res.output), (cmd, old)
