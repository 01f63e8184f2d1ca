"""Regression tests for bugs a code review reproduced by hand (issue 11's list).

Each test failed before its fix; the docstring says what the user saw.
"""

from __future__ import annotations

import fcntl
import json
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from moagraph.graph.testing import ArithmeticTask, fake_pool
from moagraph.models.replay import ReplayStore
from moagraph.models.runtime import PoolRuntime
from moagraph.route.encoders import HashingEncoder
from moagraph.route.routemoa import RouteMoA
from moagraph.route.scorer import Scorer
from moagraph.search.base import SearchExhaustedError, get_optimizer
from moagraph.search.space import SearchSpace
from moagraph.tasks.base import Example


def test_routemoa_keeps_validated_overrides() -> None:
    """Bug 3: RouteMoA(k="2") kept the string, then plan() raised TypeError."""
    pool = fake_pool("a", "b", "c")
    s = Scorer(HashingEncoder(16), pool.names)
    import numpy as np

    s.weights = [np.zeros((16, 3), np.float32), np.asarray([0.9, 0.5, 0.1], np.float32)]
    s.prior = np.asarray([0.9, 0.5, 0.1])
    router = RouteMoA(s, PoolRuntime(pool), k="2")
    assert router.config.k == 2 and isinstance(router.config.k, int)
    plan = router.plan(Example(id="q", question="What is 1+2?", reference="3"), ArithmeticTask())
    assert plan.ranked == ["a", "b"]
    with pytest.raises(ValidationError, match="k"):
        RouteMoA(s, PoolRuntime(pool), k=0)
    with pytest.raises(ValidationError, match="no_such_option"):
        RouteMoA(s, PoolRuntime(pool), no_such_option=1)


async def test_exhaustive_ask_after_the_last_graph_names_the_problem() -> None:
    """Bug 4: ask() after the last graph raised 'RuntimeError: coroutine raised StopIteration'."""
    sp = SearchSpace.from_pool(
        fake_pool("s", "m"), avg_in=202, avg_out=275, budget=3.0, max_nodes=2, flat=True
    )
    opt = get_optimizer("exhaustive", sp, seed=0)
    n = len(opt.graphs)
    assert n > 0
    for _ in range(n):
        c = await opt.ask()
        await opt.tell(c, 0.5)
    assert opt.finished
    with pytest.raises(SearchExhaustedError, match="every graph"):
        await opt.ask()


def test_replay_reader_waits_for_an_append_in_progress(tmp_path: Path) -> None:
    """Bug 5: appends were locked, reads were not; a reader could parse a torn last line.

    A writer holds the append lock with half a record on disk; a reader started then must
    wait and see the whole record once the writer finishes (it raised "not valid JSON").
    """
    path = tmp_path / "r.jsonl"
    ReplayStore(path, must_exist=False).append(
        {"model": "m", "query_id": "q0", "sample": 0, "text": "a"}
    )
    line = json.dumps({"model": "m", "query_id": "q1", "sample": 0, "text": "b" * 1000}) + "\n"
    result: dict[str, object] = {}

    def read() -> None:
        try:
            result["n"] = len(ReplayStore(path))
        except Exception as e:  # the bug: ReplayFileError on the torn line
            result["error"] = e

    with open(path, "ab") as raw:
        fcntl.flock(raw.fileno(), fcntl.LOCK_EX)
        raw.write(line[:100].encode())
        raw.flush()
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(0.5)
        assert reader.is_alive(), f"reader did not wait for the writer's lock: {result}"
        raw.write(line[100:].encode())
        raw.flush()
        fcntl.flock(raw.fileno(), fcntl.LOCK_UN)
    reader.join(10)
    assert result == {"n": 2}


def test_record_unknown_model_names_the_real_flag(tmp_path: Path) -> None:
    """Bug 7: `record --model nope` named a `--models` flag that does not exist."""
    from typer.testing import CliRunner

    from moagraph.cli import _register, app

    _register()
    r = CliRunner().invoke(
        app,
        [
            "record",
            "--pool",
            "local",
            "--task",
            "gsm8k",
            "--split",
            "sample",
            "--n",
            "1",
            "--model",
            "nope",
            "-o",
            str(tmp_path / "out"),
        ],
    )
    assert r.exit_code != 0
    assert "--model 'nope'" in r.output and "--models" not in r.output


def test_cli_error_printer_keeps_bracketed_text(capsys: pytest.CaptureFixture[str]) -> None:
    """Bug 2: `pip install 'moagraph[local]'` was printed as `pip install 'moagraph'`
    (Rich read `[local]` as markup and dropped it)."""
    from moagraph.cli._errors import fail

    exit_ = fail(ValueError("needs llama-cpp-python; pip install 'moagraph[local]' [/red] [bold]x"))
    assert exit_.exit_code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "pip install 'moagraph[local]' [/red] [bold]x" in err
