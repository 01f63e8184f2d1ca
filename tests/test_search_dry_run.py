"""--dry-run of eval and record: the planned FLOPs, dollars and calls, nothing called or written.

(search --dry-run is tested in test_search_api.py.)"""

from __future__ import annotations

from typer.testing import CliRunner

from moagraph.cli import _register, app
from moagraph.graph.builders import single
from moagraph.graph.cost import estimate_cost
from moagraph.models.pool import load_pool
from moagraph.pools import resolve_pool
from moagraph.tasks.registry import get_task


def _invoke(*args: str) -> str:
    _register()
    r = CliRunner().invoke(app, list(args), terminal_width=200)
    assert r.exit_code == 0, r.output
    return " ".join(r.output.split())  # rich wraps lines


def test_eval_dry_run(tmp_path) -> None:
    store = tmp_path / "runs.sqlite"
    out = _invoke("eval", "--pool", "zeroeval-math", "--task", "math", "--split", "zeroeval",
                  "--model", "gemma-2-9b-it", "--n", "5", "--store", str(store), "--dry-run")  # fmt: skip
    est = estimate_cost(
        single("gemma-2-9b-it"), load_pool(resolve_pool("zeroeval-math")), get_task("math")
    )
    assert "no model was called" in out
    assert f"per query: {est.flops_norm:.3g} normalised FLOPs ({est.flops:.3g} FLOPs)" in out
    assert f"total: {5 * est.flops:.3g} FLOPs" in out and "5 model calls" in out
    assert not store.exists()


def test_record_dry_run(tmp_path) -> None:
    dest = tmp_path / "rec"
    out = _invoke("record", "--pool", "local", "--task", "gsm8k", "--split", "sample", "--n", "3",
                  "--samples", "2", "-o", str(dest), "--dry-run")  # fmt: skip
    pool, task = load_pool(resolve_pool("local")), get_task("gsm8k")
    per_query = 2 * sum(estimate_cost(single(m), pool, task).flops for m in pool.names)
    calls = 2 * len(pool.names)
    assert "no model was called" in out
    assert f"{calls} model calls" in out and f"{3 * calls} model calls" in out
    assert f"total, at most: {3 * per_query:.3g} FLOPs" in out
    assert not dest.exists()


def test_search_pilot_and_mixes_flags_reach_the_search() -> None:
    """--pilot/--mixes are parsed into prepare_search: a bad value is refused by name,
    good ones are accepted (the errors come from prepare_search, so the values reach it)."""
    _register()
    bad = CliRunner().invoke(app, ["search", "--pilot", "nope", "--dry-run"], terminal_width=200)
    assert bad.exit_code != 0 and "--pilot 'nope'" in bad.output
    bad = CliRunner().invoke(app, ["search", "--mixes", "some", "--dry-run"], terminal_width=200)
    assert bad.exit_code != 0 and "--mixes 'some'" in bad.output
    assert "agent:" in _invoke("search", "--pilot", "coverage", "--mixes", "all", "--dry-run")
