"""One definition per shared flag, so a flag means the same thing in every command.

Every command that takes ``--pool``, ``--task``, ``-n``, ``-o/--out``, ``--cache``,
``--store``, ``--budget`` ... builds it with :func:`opt` from :data:`FLAGS`: the same
names (short flag included), the same type and the same help, plus an optional
command-specific sentence. ``tests/test_cli_consistency.py`` walks the command tree
and holds every command to this table. The resolvers below (:func:`resolve_task`,
:func:`resolve_budget`) give those flags one grammar everywhere.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from moagraph.models.pool import Pool
    from moagraph.tasks.base import Task


@dataclass(frozen=True)
class Flag:
    """A shared flag: its names (long first), the Python types it may be read as
    (``list[...]`` = repeatable), and the help every command starts with."""

    names: tuple[str, ...]
    types: tuple[Any, ...]
    help: str


DEFAULT_CACHE = Path("runs/cache.sqlite")
"""--cache default of the batch commands (eval, search): a rerun makes no repeated call."""

DEFAULT_STORE = Path("runs/moagraph.sqlite")
"""--store default of eval: the run store every result and trace goes to."""

FLAGS: dict[str, Flag] = {
    f.names[0]: f
    for f in (
        Flag(
            ("--pool", "-p"),
            (str,),
            "Pool: a bundled name (local, zeroeval-math, gsm8k-local, alpaca_eval, ...), "
            "a pool YAML file, or a folder holding pool.yaml.",
        ),
        Flag(
            ("--task", "-t"),
            (str,),
            "Task: gsm8k, math, humaneval, mbpp, mmlu, mmlu-pro, chat, ...; your own JSONL "
            "file as jsonl:PATH:GRADER (GRADER: exact, number, math, choice or code; rows "
            "{question, reference, id?, choices?}); or package.module:TaskClass.",
        ),
        Flag(
            ("--split",),
            (str,),
            "Task split: `sample` is bundled with moagraph; test, zeroeval, ... are read "
            "from the data folder.",
        ),
        Flag(
            ("--n", "-n"),
            (int,),
            "Number of examples (queries): a seeded sample of the split.",
        ),
        Flag(("--seed",), (int,), "Random seed."),
        Flag(("--out", "-o"), (Path,), "Output path."),
        Flag(
            ("--cache",),
            (Path,),
            "SQLite call cache (model calls, WAL mode): a repeated identical call is answered "
            "from it and costs nothing.",
        ),
        Flag(("--no-cache",), (bool,), "Use no call cache (every call is made)."),
        Flag(
            ("--store",),
            (Path,),
            "SQLite run store: every query's result and trace (per node prompt, output, "
            "tokens, FLOPs, dollars, latency).",
        ),
        Flag(
            ("--budget",),
            (str,),
            "Budget per query: normalised FLOPs (1 = one no-input call of the smallest model) "
            "or paper:b, the paper's rule (the cost of a complete DAG of b smallest-model "
            "nodes plus an output node; b = 4/8/12, or paper:18/42/80).",
        ),
        Flag(("--budget-dollars",), (float,), "Most planned dollars per query."),
        Flag(
            ("--graph", "-g"),
            (str, list[str]),
            "Graph: a bundled name (vote3, chain2, moa2x1, best-of-3) or a YAML/JSON file.",
        ),
        Flag(("--model", "-m"), (str, list[str]), "A model of the pool, by its name in the pool."),
        Flag(("--models",), (str,), "Comma-separated model names: a,b,c."),
        Flag(("--max-tokens",), (int,), "Most new tokens per model call."),
        Flag(("--temperature",), (float,), "Sampling temperature of every call."),
        Flag(
            ("--ray",),
            (str,),
            "Run the pool's models as replicas on a Ray cluster: HEAD:6379, auto (the cluster "
            "of this machine or $RAY_ADDRESS) or local (a private one); needs "
            "`pip install 'moagraph[ray]'`. Orchestration, stores and caches stay here.",
        ),
        Flag(
            ("--dry-run",),
            (bool,),
            "Print the estimated FLOPs, dollars and model calls (per query and in total) and "
            "exit: no model is called, nothing is written.",
        ),
        Flag(("--resume",), (bool,), "Continue a stopped run where it ended."),
        Flag(("--name",), (str,), "Pool name (default: the output folder's name)."),
        Flag(
            ("--data-dir",),
            (Path,),
            "Folder with the full data sets (default: $MOAGRAPH_DATA_DIR or ../shared/data); "
            "a relative jsonl:PATH task is also looked for there.",
        ),
        Flag(("--limit",), (int,), "Keep only the first N questions (instructions)."),
        Flag(
            ("--tokens",),
            (str,),
            "How missing token counts are estimated: chars4 (characters / 4), minilm (the "
            "MiniLM tokenizer) or auto (minilm when installed, else chars4).",
        ),
        Flag(("--exclude-closed",), (bool,), "Leave out models of undisclosed size."),
        Flag(
            ("--max-params-b",),
            (float,),
            "Only open models with at most this many (active) billion parameters.",
        ),
        Flag(("--plot",), (Path,), "Also write a PNG plot to this path."),
        Flag(
            ("--router",), (Path, list[str]), "A trained scorer file from `moagraph route train`."
        ),
        Flag(("--embed-cache",), (Path,), "SQLite cache of query embeddings (router encoder)."),
    )
}
"""The shared flags by long name (``tests/test_cli_consistency.py`` enforces them)."""


def opt(name: str, extra: str = "", **kwargs: Any) -> Any:
    """``typer.Option`` for shared flag ``name``: its names and help, plus ``extra``."""
    f = FLAGS[name]
    text = f"{f.help} {extra}" if extra else f.help
    return typer.Option(*f.names, help=text, **kwargs)


def deprecated(old: str, new: str) -> None:
    """One line on stderr for an old spelling that still works (hidden from --help)."""
    print(f"note: {old} is deprecated; use {new}", file=sys.stderr)


def resolve_task(name: str, data_dir: Path | None = None) -> Task:
    """A registered task name, ``jsonl:PATH:GRADER`` (a JSONL file of questions and a
    grader), or ``package.module:TaskClass`` for a user's own task class."""
    from moagraph.tasks.jsonl import is_jsonl_spec

    if ":" in name and not is_jsonl_spec(name):
        import importlib

        mod_name, _, cls_name = name.partition(":")
        try:
            cls = getattr(importlib.import_module(mod_name), cls_name)
        except (ImportError, AttributeError) as e:
            raise ValueError(
                f"--task {name!r}: cannot import {cls_name} from {mod_name} ({e})"
            ) from None
        task: Task = cls()
        return task
    from moagraph.tasks.registry import get_task

    return get_task(name, data_dir=data_dir) if data_dir is not None else get_task(name)


def resolve_budget(text: str | None, pool: Pool, task: Task) -> float | None:
    """``--budget`` text -> normalised FLOPs per query (None: no budget).

    The grammar of ``moagraph search``: a number, or ``paper:b`` computed with this
    pool's smallest model and output model and the task's average lengths
    (:meth:`moagraph.search.space.SearchSpace.paper_budget`)."""
    if text is None:
        return None
    from moagraph.search.space import parse_budget

    value, paper_b = parse_budget(text)
    if paper_b is not None:
        from moagraph.search.space import SearchSpace

        value = SearchSpace.from_pool(pool, task, budget=None).paper_budget(paper_b)
    if value is None or not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"--budget {text}: must be a finite number > 0 (normalised FLOPs per query) or "
            "paper:b; omit it for no budget"
        )
    return value
