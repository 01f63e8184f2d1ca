"""Every ``python benchmarks/NAME.py --flag`` the README names exists and takes that flag.

A benchmark's flags change with it; the README's rows did not always follow
(``bench_search.py --quick --pool`` stayed documented after both were gone).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CALL = re.compile(r"python benchmarks/(\w+)\.py([^`|#\n]*)")


def readme_calls() -> dict[str, set[str]]:
    """Benchmark name -> flags written after it on the same README line (continuations too)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    calls: dict[str, set[str]] = {}
    for name, rest in CALL.findall(text):
        calls.setdefault(name, set()).update(re.findall(r"--[a-z][a-z0-9-]*", rest))
    return calls


CALLS = readme_calls()


def test_the_readme_names_benchmarks() -> None:
    assert {"bench_search", "bench_route", "bench_local_tasks"} <= set(CALLS)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_readme_benchmark_flags_exist(name: str) -> None:
    script = ROOT / "benchmarks" / f"{name}.py"
    assert script.exists(), f"README names benchmarks/{name}.py, which does not exist"
    if not CALLS[name]:
        return
    out = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    known = set(re.findall(r"--[a-z][a-z0-9-]*", out.stdout))
    missing = sorted(CALLS[name] - known)
    assert not missing, f"README passes {missing} to benchmarks/{name}.py; its --help has none"
