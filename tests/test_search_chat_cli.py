"""`moagraph search` on a non-votable task (chat): oracle select objective, labelled; live pools refused."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from moagraph.models.pool import load_pool
from moagraph.pools import resolve_pool
from moagraph.search.study import Study

SLICE = ["FuseChat-Llama-3.2-1B-Instruct", "gemma-7b-it", "FuseChat-Gemma-2-9B-Instruct"]


def _slice_pool(tmp_path) -> str:
    """Three models of the bundled AlpacaEval replay pool, reading its recordings in place."""
    pool = load_pool(resolve_pool("alpaca_eval"))
    models = []
    for name in SLICE:
        d = pool[name].model_dump(mode="json")
        d["replay"] = str(pool.resolve(pool[name].replay or ""))
        models.append(d)
    f = tmp_path / "pool.yaml"
    f.write_text(yaml.safe_dump({"name": "alpaca-slice", "models": models}))
    return str(f)


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_chat_search_on_replay_slice_scores_multi_node_graphs(tmp_path) -> None:
    from moagraph.cli import _register, app

    _register()
    study = tmp_path / "s.sqlite"
    args = [
        "search",
        "--task",
        "chat",
        "--pool",
        _slice_pool(tmp_path),
        "--split",
        "sample",
        "--budget",
        "100",
        "--optimizer",
        "exhaustive",
        "--iterations",
        "10",
        "--train-n",
        "10",
        "--heldout-n",
        "10",
        "--max-nodes",
        "3",
        "--study",
        str(study),
        "--cache",
        str(tmp_path / "c.sqlite"),
        "--study-name",
        "chat",
    ]
    r = CliRunner().invoke(app, args)  # no --flat: forced, with a note
    out = _flat(r.output)
    assert r.exit_code == 0, r.output
    assert "objective: ORACLE best-of-n" in out and "UPPER BOUND" in out
    assert "oracle upper bound" in out and "(oracle UB)" in out  # final table and footnote
    assert "uses flat graphs" in out
    st = Study.load(study, "chat")
    assert (
        st.config["space"]["sink_mode"] == "select"
        and st.config["evaluator"] == "exact-replay-select"
    )
    trials = st.trials()
    st.close()
    assert len(trials) == 7  # every mix of 3 models, one recording each
    single = {t.graph.llm_nodes[0].model: t.reward for t in trials if len(t.graph.llm_nodes) == 1}
    multi = [t for t in trials if len(t.graph.llm_nodes) > 1]
    assert len(single) == 3 and len(multi) == 4
    for t in multi:  # best-of-n: never below its best member, and far from ~0
        members = max(single[n.model] for n in t.graph.llm_nodes)
        assert t.reward >= members - 1e-12
        assert t.reward > 0.1
    full = next(t for t in multi if len(t.graph.llm_nodes) == 3)
    assert full.reward > max(single.values())


def test_chat_search_on_live_pool_is_refused(tmp_path) -> None:
    from moagraph.cli import _register, app

    _register()
    pool = tmp_path / "live.yaml"
    pool.write_text(
        yaml.safe_dump(
            {
                "name": "live",
                "models": [
                    {
                        "name": "m",
                        "backend": "openai",
                        "base_url": "http://127.0.0.1:9/v1",
                        "params_b": 1.0,
                        "layers": 16,
                        "hidden_size": 2048,
                    },
                ],
            }
        )
    )
    r = CliRunner().invoke(
        app,
        [
            "search",
            "--task",
            "chat",
            "--pool",
            str(pool),
            "--split",
            "sample",
            "--optimizer",
            "random",
            "--iterations",
            "1",
            "--train-n",
            "2",
            "--heldout-n",
            "0",
            "--study",
            str(tmp_path / "s.sqlite"),
            "--cache",
            str(tmp_path / "c.sqlite"),
        ],
    )
    out = _flat(r.output)
    assert r.exit_code == 2, r.output
    assert "--task 'chat'" in out and "--pool alpaca_eval" in out and "Traceback" not in out
