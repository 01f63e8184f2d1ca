"""moagraph on a real Ray cluster: a head and a worker node on loopback.

Skipped when the ray extra is absent. The cluster is started once for the
module (``ray start --block`` processes, tiny CPU and object-store sizes, no
dashboard) and every one of its processes is killed by pid afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'moagraph[ray]'")

from moagraph.graph.evaluate import aevaluate  # noqa: E402
from moagraph.graph.executor import GraphExecutor  # noqa: E402
from moagraph.graph.policy import GraphPolicy  # noqa: E402
from moagraph.graph.spec import Graph  # noqa: E402
from moagraph.graph.testing import ArithmeticTask, fake_pool  # noqa: E402
from moagraph.models.base import SamplingParams  # noqa: E402
from moagraph.models.pool import Pool, load_pool  # noqa: E402
from moagraph.models.runtime import PoolRuntime  # noqa: E402
from moagraph.pools import resolve_pool  # noqa: E402
from moagraph.scale.cluster import on_cluster  # noqa: E402
from moagraph.scale.ray_backend import RayBackend  # noqa: E402
from moagraph.scale.spec import RaySpec  # noqa: E402
from moagraph.scale.testing import LoopbackCluster  # noqa: E402
from moagraph.store import RunStore  # noqa: E402
from moagraph.tasks.registry import get_task  # noqa: E402

REPLAY_POOL = "gsm8k-local"


@pytest.fixture(scope="module")
def cluster():
    c = LoopbackCluster(workers=1, num_cpus=1, object_store_mb=80)
    c.start()
    old = {k: os.environ.get(k) for k in c.env() if k.startswith("RAY_")}
    os.environ.update({k: v for k, v in c.env().items() if k.startswith("RAY_")})
    try:
        ray.init(address=c.address, log_to_driver=False, logging_level="warning")
        c.wait_nodes(2)
        yield c
    finally:
        ray.shutdown()
        c.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _recorded_examples(task, pool: Pool, n: int):
    lines = pool.resolve("queries.jsonl").read_text(encoding="utf-8").splitlines()
    ids = [json.loads(x)["query_id"] for x in lines]
    wanted = set(ids[:n])
    return [ex for ex in task.load("test") if ex.id in wanted]


def _evaluate(pool: Pool, graph: Graph, task, examples, concurrency: int = 4, store=None):
    runtime = PoolRuntime(pool)
    params = SamplingParams(max_tokens=192, temperature=0.7, seed=0)
    policy = GraphPolicy(graph, GraphExecutor(runtime, task, default_params=params))

    async def go():
        try:
            return await aevaluate(
                policy, task, examples, concurrency=concurrency, progress=False, store=store
            )
        finally:
            await runtime.aclose()

    return asyncio.run(go()), runtime


@pytest.mark.needs_shared_data("gsm8k", "test.jsonl")  # gsm8k --split test
def test_replay_pool_on_two_nodes_equals_single_process(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    pool = load_pool(resolve_pool(REPLAY_POOL))
    task = get_task("gsm8k")
    examples = _recorded_examples(task, pool, 6)
    graph = Graph.from_dict(  # 4 recorded samples per model: every call replays exactly
        {
            "name": "vote-mixed",
            "nodes": [
                {"id": "a0", "model": "gemma-270m"},
                {"id": "a1", "model": "gemma-270m"},
                {"id": "b0", "model": "gemma-270m-q3km"},
                {"id": "b1", "model": "gemma-270m-q3km"},
                {"id": "vote", "role": "vote", "inputs": ["a0", "a1", "b0", "b1"]},
            ],
            "sink": "vote",
        }
    )
    store = RunStore(tmp_path / "runs.sqlite")
    local, _ = _evaluate(pool, graph, task, examples, store=store)
    placed = on_cluster(pool, replicas=2)
    assert all(m.ray is not None and m.ray.replicas == 2 for m in placed.models)
    remote, runtime = _evaluate(placed, graph, task, examples, store=store)
    backend = runtime._backends["gemma-270m"]
    assert isinstance(backend, RayBackend)
    assert len(set(backend.nodes)) == 2, "SPREAD puts one replica on each node"
    assert all(s > 0 for s in backend.served()), backend.served()
    assert backend.restarts == 0 and backend.retries == 0
    by_id = {r.example_id: r for r in remote.rows}  # the store lists rows as they finished
    assert set(by_id) == {r.example_id for r in local.rows} and len(by_id) == len(examples)
    for a in local.rows:
        b = by_id[a.example_id]
        assert (a.score, a.dollars, a.error) == (b.score, b.dollars, b.error)
        assert a.flops == pytest.approx(b.flops, rel=1e-12)  # summed in finishing order
        ta, tb = store.trace(local.run_id, a.example_id), store.trace(remote.run_id, b.example_id)
        assert ta.output == tb.output
        assert [(n.node_id, n.output) for n in ta.nodes] == [
            (n.node_id, n.output) for n in tb.nodes
        ]
    store.close()
    assert local.errors == 0 and remote.errors == 0
    assert remote.accuracy == local.accuracy and local.accuracy is not None


def _fixed_latency_pool(log: Path, latency_s: float, replicas: int, per_replica: int) -> Pool:
    base = fake_pool("m1").models[0]
    spec = base.model_copy(
        update={
            "ray": RaySpec(
                replicas=replicas,
                num_cpus=0,
                max_concurrency=per_replica,
                factory="moagraph.scale.testing:fixed_latency",
            ),
            "extra": {"latency_s": latency_s, "call_log": str(log)},
        }
    )
    return Pool(name="fixed", models=[spec])


def _chain(model: str) -> Graph:
    return Graph.from_dict(
        {
            "name": "chain2",
            "nodes": [{"id": "c0", "model": model}, {"id": "c1", "model": model, "inputs": ["c0"]}],
            "sink": "c1",
        }
    )


def _run_with_kill(pool: Pool, kill) -> tuple[object, RayBackend]:  # type: ignore[no-untyped-def]
    """Evaluate 10 queries of a 2-node chain; call ``kill(backend)`` once replica 0 has
    calls in flight and some calls have finished."""
    task = ArithmeticTask()
    examples = task.load(n=10)
    runtime = PoolRuntime(pool)
    policy = GraphPolicy(_chain("m1"), GraphExecutor(runtime, task))

    async def go():
        backend = runtime.backend("m1")
        assert isinstance(backend, RayBackend)
        run = asyncio.create_task(aevaluate(policy, task, examples, concurrency=4, progress=False))
        while not (sum(backend.served()) >= 4 and backend._slots[0].in_flight > 0):
            await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, kill, backend)
        try:
            return await asyncio.wait_for(run, timeout=120), backend
        finally:
            await runtime.aclose()

    return asyncio.run(go())


def _assert_nothing_lost(report, log: Path, retried: int | None = None) -> None:  # type: ignore[no-untyped-def]
    """10 queries x 2 nodes all answered. ``retried=None``: each call made exactly once (the
    calls that died with the replica were retried, no finished call was made again). With
    ``retried=N``: a call may have run to its end on a node that died before its reply got
    out (at-least-once is all a dead node allows), so up to N retried calls may appear twice
    in the log, and nothing else may."""
    assert report.n == 10 and report.errors == 0 and report.accuracy == 1.0
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    done = Counter((c["query_id"], c["prompt"]) for c in calls)
    assert len(done) == 20, done
    if retried is None:
        assert set(done.values()) == {1}, done
    else:
        assert max(done.values()) <= 2 and sum(v - 1 for v in done.values()) <= retried, done


def test_killed_replica_loses_no_query(cluster: LoopbackCluster, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    pool = _fixed_latency_pool(log, latency_s=0.3, replicas=2, per_replica=2)
    victim: list[object] = []

    def kill(backend: RayBackend) -> None:
        victim.append(backend.replica_actors()[0])
        ray.kill(victim[0], no_restart=True)

    report, backend = _run_with_kill(pool, kill)
    _assert_nothing_lost(report, log)
    assert backend.restarts == 1 and backend.retries >= 1
    assert backend.replica_actors()[0] is not victim[0]
    pids = {json.loads(x)["pid"] for x in log.read_text().splitlines()}
    assert len(pids) == 3, "two replicas, then the replacement of the killed one"


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("moagraph")), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _finish(proc: subprocess.Popen[bytes], timeout: float = 180) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out.decode()


def _rows(store: Path, run_id: str) -> dict[str, tuple[object, ...]]:
    if not store.exists():
        return {}
    with sqlite3.connect(store) as db:
        try:
            rows = db.execute(
                "SELECT example_id, score, flops, error, trace FROM results WHERE run_id=?",
                (run_id,),
            ).fetchall()
        except sqlite3.OperationalError:  # the driver has not made its tables yet
            return {}
    return {r[0]: (r[1], r[2], r[3], json.loads(r[4])["output"]) for r in rows}


@pytest.mark.needs_shared_data("gsm8k", "test.jsonl")  # gsm8k --split test
def test_cli_eval_resume_after_driver_killed(cluster: LoopbackCluster, tmp_path: Path) -> None:
    src = load_pool(resolve_pool(REPLAY_POOL))
    raw = yaml.safe_load(Path(src.path).read_text())  # type: ignore[arg-type]
    for m in raw["models"]:
        m["replay"] = str(src.resolve(m["replay"]))
        m["extra"] = {"latency_s": 0.4}
        m["ray"] = {"replicas": 2, "num_cpus": 0, "factory": "moagraph.scale.testing:slow_replay"}
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(raw))
    store = tmp_path / "runs.sqlite"
    common = ["eval", "--pool", str(pool_file), "--model", "gemma-270m", "--task", "gsm8k",
              "--split", "test", "--n", "8", "--concurrency", "1", "--store", str(store),
              "--no-progress"]  # fmt: skip
    env = {**cluster.env(), "RAY_ADDRESS": cluster.address}

    first = _cli(*common, "--run-id", "r", "--ray", cluster.address, env=env)
    try:
        deadline = time.monotonic() + 120
        while len(_rows(store, "r")) < 2:
            assert first.poll() is None, first.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)  # the driver dies mid-run
        first.wait()
    partial = _rows(store, "r")
    assert 2 <= len(partial) < 8

    resumed = _cli(*common, "--run-id", "r", "--resume", "--ray", cluster.address, env=env)
    out = _finish(resumed)
    assert resumed.returncode == 0, out
    assert "from the store" in out
    done = _rows(store, "r")
    assert len(done) == 8
    assert {k: done[k] for k in partial} == partial  # finished queries were not run again

    # the same run in one process, without Ray, gives the same results
    no_ray = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    raw2 = yaml.safe_load(pool_file.read_text())
    for m in raw2["models"]:
        del m["ray"]
    pool_file.write_text(yaml.safe_dump(raw2))
    single = _cli(*common, "--run-id", "single", env=no_ray)
    out = _finish(single)
    assert single.returncode == 0, out
    assert _rows(store, "single") == done


def test_cli_record_on_cluster(cluster: LoopbackCluster, tmp_path: Path) -> None:
    """`moagraph record --ray`: calls on the cluster, records written by the driver; the
    recorded replay pool carries no `ray:` option."""
    base = fake_pool("m1").models[0]
    spec = base.model_dump(mode="json", exclude_none=True)
    spec["extra"] = {"latency_s": 0.05}
    pool_file = tmp_path / "live.yaml"
    pool_file.write_text(yaml.safe_dump({"name": "live", "models": [spec]}))
    out_dir = tmp_path / "rec"
    env = {**cluster.env(), "RAY_ADDRESS": cluster.address}
    args = ["record", "--pool", str(pool_file), "--task", "gsm8k", "--split", "sample",
            "--n", "3", "--samples", "2", "-o", str(out_dir), "--ray", cluster.address]  # fmt: skip
    # the CLI places every model on the cluster; the factory gives the fixed-latency backend
    raw = yaml.safe_load(pool_file.read_text())
    raw["models"][0]["ray"] = {
        "replicas": 2,
        "num_cpus": 0,
        "factory": "moagraph.scale.testing:fixed_latency",
    }
    pool_file.write_text(yaml.safe_dump(raw))
    out = _finish(_cli(*args, env=env))
    assert "recorded 6 new calls" in out, out
    recorded = load_pool(out_dir / "pool.yaml")
    assert recorded.models[0].backend == "replay" and recorded.models[0].ray is None


def test_killed_worker_node_loses_no_query(cluster: LoopbackCluster, tmp_path: Path) -> None:
    """kill -9 of the worker node's raylet: its replica dies with the node and is replaced
    on the head. Runs last: the module's worker node is gone afterwards."""
    log = tmp_path / "calls.jsonl"
    pool = _fixed_latency_pool(log, latency_s=0.3, replicas=2, per_replica=2)
    worker = cluster.procs[1]

    def kill(backend: RayBackend) -> None:
        assert len(set(backend.nodes)) == 2
        for pid in cluster.raylet_pids(worker):
            os.kill(pid, signal.SIGKILL)

    report, backend = _run_with_kill(pool, kill)
    _assert_nothing_lost(report, log, retried=backend.retries)
    assert backend.restarts >= 1 and backend.retries >= 1


def test_cli_search_on_cluster_resumes_after_driver_killed(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    """`moagraph search --ray`: trials' model calls on the cluster (executor), the study on
    the driver; kill -9 of the driver mid-search, `--resume` finishes it, and every trial
    equals the single-process search (exact replay) with the same seed."""
    from moagraph.search import optimize
    from moagraph.search.space import graph_key

    models = ["gemma-2-9b-it", "Meta-Llama-3-8B-Instruct"]
    src = load_pool(resolve_pool("zeroeval-math"))
    raw = yaml.safe_load(Path(src.path).read_text())  # type: ignore[arg-type]
    raw["models"] = [m for m in raw["models"] if m["name"] in models]
    for m in raw["models"]:
        m["replay"] = str(src.resolve(m["replay"]))
        m["extra"] = {"latency_s": 0.3}
        m["ray"] = {"replicas": 2, "num_cpus": 0, "factory": "moagraph.scale.testing:slow_replay"}
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(raw))
    study = tmp_path / "study.sqlite"
    opts = dict(split="zeroeval", optimizer="random", n_trials=8, budget=4, flat=True,
                models=models, train_n=4, heldout_n=2, test_n=2, seed=3)  # fmt: skip
    common = ["search", "--pool", str(pool_file), "--task", "math", "--split", "zeroeval",
              "--optimizer", "random", "--iterations", "8", "--budget", "4", "--flat",
              "--models", ",".join(models), "--train-n", "4", "--heldout-n", "2", "--test-n", "2",
              "--seed", "3", "--study", str(study), "--study-name", "s", "--no-compare",
              "--cache", str(tmp_path / "cache.sqlite"), "--ray", cluster.address]  # fmt: skip
    env = {**cluster.env(), "RAY_ADDRESS": cluster.address}

    def trials() -> list[tuple[object, ...]]:
        if not study.exists():
            return []
        with sqlite3.connect(study) as db:
            try:
                return db.execute(
                    "SELECT number, graph_key, reward, cost, status FROM trials WHERE study='s' "
                    "ORDER BY number"
                ).fetchall()
            except sqlite3.OperationalError:
                return []

    first = _cli(*common, env=env)
    try:
        deadline = time.monotonic() + 120
        while len(trials()) < 2:
            assert first.poll() is None, first.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)  # the driver dies mid-search
        first.wait()
    partial = trials()
    assert 2 <= len(partial) < 8, partial

    resumed = _cli(*common, "--resume", env=env)
    out = _finish(resumed)
    assert resumed.returncode == 0, out
    done = trials()
    assert len(done) == 8 and done[: len(partial)] == partial
    with sqlite3.connect(study) as db:
        (config,) = db.execute("SELECT config FROM studies WHERE name='s'").fetchone()
    assert json.loads(config)["evaluator"] == "executor"  # the calls went to the cluster

    single_store = tmp_path / "single.sqlite"
    single = optimize("zeroeval-math", "math", storage=single_store, study_name="one", **opts)
    with sqlite3.connect(single_store) as db:
        ref = db.execute(
            "SELECT number, graph_key, reward, cost, status FROM trials ORDER BY number"
        ).fetchall()
    assert [(n, k, r, s) for n, k, r, _c, s in done] == [(n, k, r, s) for n, k, r, _c, s in ref]
    assert all(s == "complete" for *_, s in done)
    assert [c for *_, c, _s in done] == pytest.approx([c for *_, c, _s in ref], rel=1e-9)
    best = graph_key(single.best_graph)
    assert any(k == best for _n, k, *_ in done)
