"""The code sandbox: correct code passes, wrong code fails, and hostile code
fails cleanly without harming the host (real subprocesses, no mocks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from moagraph.tasks.grading import (
    SandboxResult,
    arun_code,
    humaneval_program,
    run_code,
    sandbox_capabilities,
)
from moagraph.tasks.grading.sandbox import _UID_BASE, _UID_SPAN, _uid_processes

DATA = Path(__file__).resolve().parents[1] / "src" / "moagraph" / "tasks" / "data"
CAPS = sandbox_capabilities()
needs_root = pytest.mark.skipif(
    not CAPS.drops_privileges, reason="dropping privileges needs root and a world-executable Python"
)


def _problem(name: str) -> dict:
    for line in (DATA / "humaneval_sample.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["name"] == name:
            return r
    raise KeyError(name)


ADD = _problem("HumanEval_53_add")


def _add_program(body: str) -> str:
    return humaneval_program(ADD["prompt"], body, ADD["test"], ADD["entry_point"])


def _sandbox_pids() -> list[int]:
    """Live processes owned by any sandbox uid."""
    uids = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                uid = os.stat(f"/proc/{name}").st_uid
            except OSError:
                continue
            if _UID_BASE <= uid < _UID_BASE + _UID_SPAN:
                uids.add(uid)
    return [pid for uid in uids for pid in _uid_processes(uid)]


def test_correct_solution_passes() -> None:
    r = run_code(_add_program("    return x + y\n"), timeout_s=5)
    assert isinstance(r, SandboxResult)
    assert r.passed and r.status == "passed", r.stderr


def test_wrong_solution_fails_with_the_assertion() -> None:
    r = run_code(_add_program("    return x - y\n"), timeout_s=5)
    assert not r.passed and r.status == "failed"
    assert "AssertionError" in r.stderr


def test_doctest_overfit_fails_the_full_check() -> None:
    # Right on the docstring examples (2,3) and (5,7), wrong on the hidden asserts.
    r = run_code(_add_program("    return 5 if (x, y) == (2, 3) else 12\n"), timeout_s=5)
    assert r.status == "failed"


def test_output_is_captured() -> None:
    r = run_code("import sys\nprint('out-line')\nprint('err-line', file=sys.stderr)\n")
    assert r.passed
    assert r.stdout.strip() == "out-line"
    assert "err-line" in r.stderr


def test_syntax_error_is_an_error() -> None:
    r = run_code("def f(:\n    pass\n")
    assert r.status == "error" and "SyntaxError" in r.stderr


def test_exit_before_the_tests_is_not_a_pass() -> None:
    assert run_code(_add_program("    return x + y\nimport sys\nsys.exit(0)\n")).status == "failed"
    assert run_code(_add_program("    return x + y\nimport os\nos._exit(0)\n")).status == "failed"


def test_infinite_loop_is_killed_on_time() -> None:
    r = run_code(_add_program("    while True:\n        pass\n"), timeout_s=1.5)
    assert r.status == "timeout" and not r.passed
    assert r.duration_s < 10  # killed, not left running to the CPU limit


def test_memory_hog_is_stopped() -> None:
    r = run_code("x = bytearray(4 * 1024 ** 3)\n", memory_mb=256)
    assert r.status == "memory" and not r.passed


def test_file_size_limit() -> None:
    r = run_code("with open('big', 'wb') as f:\n    f.write(b'x' * (3 << 20))\n", max_file_mb=1)
    assert not r.passed


def test_can_write_in_its_own_dir() -> None:
    code = (
        "import os\n"
        "open('scratch.txt', 'w').write('hi')\n"
        "assert open('scratch.txt').read() == 'hi'\n"
        "assert os.path.realpath(os.environ['HOME']) == os.path.realpath(os.getcwd())\n"
    )
    r = run_code(code)
    assert r.passed, r.stderr


@needs_root
def test_fork_bomb_is_contained_and_host_still_spawns() -> None:
    bomb = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    r = run_code(bomb, timeout_s=2)
    assert not r.passed and r.status == "timeout"
    assert _sandbox_pids() == []  # nothing of the run survives
    done = subprocess.run(["true"], check=False)  # the host can still spawn processes
    assert done.returncode == 0


@needs_root
def test_escaped_background_process_is_swept() -> None:
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
    r = run_code(code, timeout_s=5)
    assert r.passed  # the program itself ended normally
    assert _sandbox_pids() == []


@needs_root
def test_deleting_a_file_outside_its_dir_fails(tmp_path: Path) -> None:
    victim_dir = tmp_path / "keep"
    victim_dir.mkdir()
    victim = victim_dir / "precious.txt"
    victim.write_text("do not delete")
    for p in (tmp_path, victim_dir):
        p.chmod(0o755)  # readable and traversable by anyone, writable only by us
    code = f"import os, shutil\nos.remove({str(victim)!r})\n"
    r = run_code(code)
    # Isolated: the host tree is not even visible; otherwise the dropped uid may not write.
    assert r.status == "failed"
    assert ("FileNotFoundError" if CAPS.isolated else "PermissionError") in r.stderr
    r = run_code(f"import shutil\nshutil.rmtree({str(victim_dir)!r})\n")
    assert not r.passed
    assert victim.read_text() == "do not delete"


def test_network_calls_fail_and_reach_nothing() -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    accepted: list[object] = []

    def serve() -> None:
        try:
            accepted.append(srv.accept())
        except OSError:
            pass

    t = threading.Thread(target=serve)
    t.start()
    try:
        code = (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.sendall(b'hello')\n"
        )
        r = run_code(code, timeout_s=5)
        assert r.status == "failed"
        assert "network access is disabled" in r.stderr or "unreachable" in r.stderr.lower()
    finally:
        t.join()
        srv.close()
    assert accepted == []


def test_bad_limits_are_user_errors() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        run_code("pass", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        run_code("pass", memory_mb=1)


async def test_async_runs_concurrently() -> None:
    import asyncio

    results = await asyncio.gather(*(arun_code(f"assert {i} + 1 == {i + 1}") for i in range(4)))
    assert [r.status for r in results] == ["passed"] * 4
