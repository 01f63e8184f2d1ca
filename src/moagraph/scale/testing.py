"""Backends for tests and benchmarks of the Ray layer, built inside replicas by
``ray.factory`` (so they must live in an importable module, not a test file).

:func:`fixed_latency` answers "The answer is N." after ``extra['latency_s']``
(N from the question "What is a + b?"), like :class:`~moagraph.graph.testing.ScriptedBackend`.
:func:`slow_replay` is the model's replay backend, each call delayed by
``extra['latency_s']``: the real recorded answers, slow enough to kill mid-run.
Both append one line per finished call to ``extra['call_log']`` when set
(a path on a filesystem every replica sees), so a test can count calls made
by replicas that were killed since.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from moagraph.models.base import Backend, Completion, LLMRequest, TokenCallback
from moagraph.models.pool import ModelSpec, Pool

__all__ = ["LoopbackCluster", "fixed_latency", "slow_replay"]

_Q = re.compile(r"What is (\d+) \+ (\d+)\?")


def _log(spec: ModelSpec, request: LLMRequest) -> None:
    path = spec.extra.get("call_log")
    if not path:
        return
    line = json.dumps(
        {
            "model": spec.name,
            "query_id": request.query_id,
            "sample": request.sample_index,
            "prompt": request.prompt_hash(),
            "pid": os.getpid(),
        }
    )
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


class _Delayed:
    def __init__(self, spec: ModelSpec, inner: Backend | None) -> None:
        self.spec = spec
        self.inner = inner
        self.latency_s = float(spec.extra.get("latency_s", 0.05))
        self.kind = inner.kind if inner is not None else "fixed-latency"
        self.cacheable = bool(getattr(inner, "cacheable", True))

    def identity(self, model: ModelSpec) -> str:
        return self.inner.identity(model) if self.inner is not None else f"fixed:{model.name}"

    async def complete(
        self, request: LLMRequest, on_token: TokenCallback | None = None
    ) -> Completion:
        await asyncio.sleep(self.latency_s)
        if self.inner is not None:
            c = await self.inner.complete(request, on_token)
        else:
            text = "\n".join(m["content"] for m in request.messages)
            m = _Q.findall(text)
            answer = int(m[-1][0]) + int(m[-1][1]) if m else 42
            c = Completion(
                text=f"The answer is {answer}.",
                prompt_tokens=max(1, len(text.split())),
                completion_tokens=4,
                latency_s=self.latency_s,
                model=request.model.name,
                backend=self.kind,
            )
        _log(self.spec, request)
        return c

    async def aclose(self) -> None:
        if self.inner is not None:
            await self.inner.aclose()


def fixed_latency(spec: ModelSpec, pool: Pool) -> Any:
    return _Delayed(spec, None)


def slow_replay(spec: ModelSpec, pool: Pool) -> Any:
    from moagraph.models.runtime import make_backend

    return _Delayed(spec, make_backend(spec, pool))


class LoopbackCluster:
    """A real Ray cluster on loopback for tests and benchmarks: one head and ``workers``
    worker nodes, each a ``ray start --block`` process in its own session, with small CPU and
    object-store sizes, no dashboard and no usage stats.

    Nodes get the loopback addresses 127.0.0.2, 127.0.0.3, ... (Ray maps 127.0.0.1 to the
    host's address on Linux). :meth:`stop` ends every process of those sessions by pid,
    so nothing is left behind and no other Ray on the machine is touched.
    """

    def __init__(
        self,
        workers: int = 1,
        *,
        num_cpus: int = 1,
        object_store_mb: int = 80,
        worker_resources: dict[str, float] | None = None,
        fast_failure_detection: bool = True,
    ) -> None:
        self.workers = workers
        self.num_cpus = num_cpus
        self.object_store_mb = object_store_mb
        self.worker_resources = worker_resources or {}
        self.fast = fast_failure_detection
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port = 0
        self.temp_dir = ""
        self.address = ""

    @staticmethod
    def _free_port(host: str) -> int:
        with socket.socket() as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])

    def env(self) -> dict[str, str]:
        """Environment for processes that join this cluster (drivers included)."""
        env = dict(os.environ)
        env.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"})
        if self.fast:  # notice a killed node in ~2 s instead of ~30 s
            env.update(
                {
                    "RAY_health_check_period_ms": "500",
                    "RAY_health_check_timeout_ms": "1000",
                    "RAY_health_check_failure_threshold": "3",
                }
            )
        return env

    def _ray(self) -> str:
        exe = Path(sys.executable).with_name("ray")
        return str(exe) if exe.exists() else "ray"

    def start(self, timeout_s: float = 120.0) -> LoopbackCluster:
        head_ip = "127.0.0.2"
        self.port = self._free_port(head_ip)
        self.address = f"{head_ip}:{self.port}"
        self.temp_dir = tempfile.mkdtemp(prefix="mgray")
        common = [
            "--block",
            f"--num-cpus={self.num_cpus}",
            f"--object-store-memory={self.object_store_mb * 1024**2}",
            "--disable-usage-stats",
        ]
        env = self.env()
        log = open(os.path.join(self.temp_dir, "head.out"), "wb")  # noqa: SIM115
        self.procs.append(
            subprocess.Popen(
                [self._ray(), "start", "--head", f"--port={self.port}",
                 f"--node-ip-address={head_ip}", "--include-dashboard=false",
                 f"--ray-client-server-port={self._free_port(head_ip)}",
                 f"--dashboard-port={self._free_port('127.0.0.1')}",
                 f"--temp-dir={self.temp_dir}", *common],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
            )
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection((head_ip, self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.procs[0].poll() is not None:
                    tail = Path(self.temp_dir, "head.out").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"ray head did not start:\n{tail}") from None
                time.sleep(0.3)
        for i in range(self.workers):
            self.add_worker(i)
        return self

    def add_worker(self, i: int = 0) -> subprocess.Popen[bytes]:
        ip = f"127.0.0.{3 + i}"
        log = open(os.path.join(self.temp_dir, f"worker{i}.out"), "wb")  # noqa: SIM115
        args = [self._ray(), "start", f"--address={self.address}", f"--node-ip-address={ip}",
                "--block", f"--num-cpus={self.num_cpus}",
                f"--object-store-memory={self.object_store_mb * 1024**2}",
                "--disable-usage-stats"]  # fmt: skip
        if self.worker_resources:
            args.append(f"--resources={json.dumps(self.worker_resources)}")
        p = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env()
        )
        self.procs.append(p)
        return p

    def wait_nodes(self, n: int, timeout_s: float = 120.0) -> None:
        """Block until ``n`` nodes are alive (needs ``ray.init`` done in this process)."""
        import ray

        deadline = time.monotonic() + timeout_s
        while sum(1 for x in ray.nodes() if x.get("Alive")) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {n} Ray nodes alive after {timeout_s:.0f}s")
            time.sleep(0.3)

    def session_pids(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """Every live process of the session ``proc`` leads (its Ray daemons and workers)."""
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                if os.getsid(int(d)) == proc.pid:
                    pids.append(int(d))
            except OSError:
                continue
        return pids

    def raylet_pids(self, proc: subprocess.Popen[bytes]) -> list[int]:
        out = []
        for pid in self.session_pids(proc):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if b"raylet/raylet" in fh.read():
                        out.append(pid)
            except OSError:
                continue
        return out

    def stop(self) -> None:
        for p in reversed(self.procs):
            for pid in self.session_pids(p):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LoopbackCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
