"""Issue #25: `--ray local` once a cluster already runs, and a `ray:` option that cannot
connect. A real head node is started on loopback (``ray start --head --num-cpus 1 --block``
through :class:`LoopbackCluster`) and killed by pid afterwards; each driver is its own
process, as ``moagraph eval`` would be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="needs the ray extra: pip install 'moagraph[ray]'")

from moagraph.scale.testing import LoopbackCluster

ROOT = Path(__file__).resolve().parents[1]

DRIVER = textwrap.dedent(
    """
    import json, sys
    import ray
    from moagraph.scale.cluster import connect
    resources = connect(sys.argv[1])
    out = {"cpus": resources.get("CPU"), "gcs": ray.get_runtime_context().gcs_address}
    ray.shutdown()
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def running_cluster() -> Iterator[LoopbackCluster]:
    c = LoopbackCluster(workers=0, num_cpus=1, object_store_mb=80)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _driver(c: LoopbackCluster, address: str) -> dict:
    env = c.env()
    env["RAY_ADDRESS"] = c.address  # as after `ray start --head` (or an exported address)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, address],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_ray_local_works_while_another_cluster_runs(running_cluster: LoopbackCluster) -> None:
    """Before: "object_store_memory must not be provided" (ray.init joined the running
    cluster). Now --ray local starts its own private cluster beside it."""
    out = _driver(running_cluster, "local")
    assert out["gcs"] != running_cluster.address


def test_ray_auto_joins_the_running_cluster(running_cluster: LoopbackCluster) -> None:
    out = _driver(running_cluster, "auto")
    assert out["gcs"] == running_cluster.address and out["cpus"] == 1


FAIL_FAST = textwrap.dedent(
    """
    import time
    from moagraph.models.base import BackendConfigError
    from moagraph.graph.testing import fake_pool
    from moagraph.scale.ray_backend import RayBackend
    from moagraph.scale.spec import RaySpec
    from moagraph.models.pool import Pool
    spec = fake_pool("m1").models[0].model_copy(update={"ray": RaySpec(num_cpus=0)})
    pool = Pool(name="p", models=[spec])
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        try:
            RayBackend(spec, pool)
        except BackendConfigError as e:
            print("ERR", e)
        times.append(time.monotonic() - t0)
    print("TIMES", times)
    """
)


def test_a_ray_option_without_a_cluster_is_one_named_config_error(tmp_path: Path) -> None:
    """Before: every query failed, one by one, each trying to connect. Now the first
    attempt raises a BackendConfigError naming the model and the fix (a configuration
    error: not retried), and later ones the same error at once."""
    env = dict(os.environ)
    env["RAY_ADDRESS"] = "127.0.0.2:1"  # nothing listens there
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    proc = subprocess.run(
        [sys.executable, "-c", FAIL_FAST],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=tmp_path,
    )
    errs = [line for line in proc.stdout.splitlines() if line.startswith("ERR")]
    assert len(errs) == 3, proc.stdout + proc.stderr[-3000:]
    assert "model 'm1' has a `ray:` option" in errs[0] and "ray start --head" in errs[0]
    assert len(set(errs)) == 1
    times = json.loads(proc.stdout.split("TIMES", 1)[1].strip())
    assert max(times[1:]) < 0.5, times


def test_eval_with_a_ray_option_and_no_cluster_stops_before_any_query(tmp_path: Path) -> None:
    """`moagraph eval` on a pool whose model has a `ray:` option and an unreachable
    cluster stops up front with the named error (exit 2), and no query is stored."""
    import yaml

    from moagraph.models.pool import load_pool
    from moagraph.pools import resolve_pool

    src = resolve_pool("zeroeval-gsm8k")
    pool = load_pool(src)
    spec = pool["Meta-Llama-3.1-8B-Instruct"]
    model = spec.model_dump(mode="json", exclude_none=True)
    model["replay"] = str(pool.resolve(spec.replay))
    model["ray"] = {"replicas": 1}
    (tmp_path / "pool.yaml").write_text(
        yaml.safe_dump({"name": "ray-pool", "models": [model]}), encoding="utf-8"
    )
    env = dict(os.environ)
    env["RAY_ADDRESS"] = "127.0.0.2:1"  # nothing listens there
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    store = tmp_path / "runs.sqlite"
    cmd = [sys.executable, "-c", "from moagraph.cli import main; main()", "eval"]
    cmd += ["--pool", str(tmp_path / "pool.yaml"), "--task", "gsm8k", "--split", "zeroeval"]
    cmd += ["--n", "3", "--store", str(store), "--no-progress"]
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "`ray:` option" in out and "ray start --head" in out
    if store.exists():
        import sqlite3

        with sqlite3.connect(store) as c:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
            if "results" in tables:
                assert c.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
