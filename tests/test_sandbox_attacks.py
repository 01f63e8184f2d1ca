"""Attacks on the code grader, run for real in the real sandbox; each must fail.

Grading attacks (forged verdict, always-equal answers, reading the tests) hold
on any machine. Host-isolation attacks (secrets in /proc, files left in /tmp or
/dev/shm, processes left running, the network, killing the evaluator) need the
sandbox's namespaces; where the kernel refuses them the sandbox must refuse to
run at all, which ``test_unisolated_machine_refuses_without_the_flag`` checks.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

from moagraph.tasks.grading import run_code, run_tests, sandbox_capabilities
from moagraph.tasks.grading.sandbox import SandboxError
from moagraph.tasks.registry import get_task

CAPS = sandbox_capabilities()
ROOT = Path(__file__).resolve().parents[1]
SANDBOX_PY = ROOT / "src" / "moagraph" / "tasks" / "grading" / "sandbox.py"
isolated = pytest.mark.skipif(not CAPS.isolated, reason=f"no namespaces here: {CAPS.why_not}")

HE = get_task("humaneval")
MBPP = get_task("mbpp")
HE_SAMPLE = HE.load("sample")
MBPP_SAMPLE = MBPP.load("sample")

# The probe's original attack: write "passed" on the runner's pipe and leave.
FORGED = "import os, sys\nos.write(int(sys.argv[1]), b'1')\nos._exit(0)\n"
# Stronger: a well-formed verdict frame (guessing the format) on every fd, exit 0.
FORGED_FRAMES = textwrap.dedent(
    """
    import os, json
    for body in ({"status": "passed", "detail": ""}, {"n": "", "status": "passed"}, ["ready"], ["done"]):
        data = json.dumps(body).encode()
        frame = len(data).to_bytes(4, "big") + data
        for fd in range(0, 1024):
            try:
                os.write(fd, frame)
            except OSError:
                pass
    os._exit(0)
    """
)


def _answer(entry: str, body: str) -> str:
    return f"```python\n{body}\n```"


@pytest.mark.parametrize("attack", [FORGED, FORGED_FRAMES], ids=["argv-fd", "frames-on-every-fd"])
def test_forged_verdict_fails_on_every_bundled_humaneval_problem(attack: str) -> None:
    scores = [HE.grade(_answer(ex.meta["entry_point"], attack), ex) for ex in HE_SAMPLE]
    assert len(scores) == 20 and scores == [0.0] * 20


@pytest.mark.parametrize("attack", [FORGED, FORGED_FRAMES], ids=["argv-fd", "frames-on-every-fd"])
def test_forged_verdict_fails_on_every_bundled_mbpp_problem(attack: str) -> None:
    scores = [MBPP.grade(_answer("", attack), ex) for ex in MBPP_SAMPLE]
    assert len(scores) == 20 and scores == [0.0] * 20


def test_bundled_mbpp_reference_solutions_still_pass() -> None:
    for ex in MBPP_SAMPLE:
        r = MBPP.run(f"```python\n{ex.meta['solution']}\n```", ex)
        assert r.passed, (ex.id, r.stderr[-800:])


ALWAYS_EQUAL = textwrap.dedent(
    """
    class Anything:
        def __eq__(self, other):
            return True
        def __ne__(self, other):
            return False
        __hash__ = object.__hash__
        def __bool__(self):
            return True

    def {name}(*args, **kwargs):
        return Anything()
    """
)


def test_always_equal_object_fails_humaneval_with_a_clear_reason() -> None:
    ex = next(e for e in HE_SAMPLE if e.id == "HumanEval_112_reverse_delete")
    r = HE.run(_answer("", ALWAYS_EQUAL.format(name="reverse_delete")), ex)
    assert r.status == "failed"
    assert "only plain data" in r.stderr and "Anything" in r.stderr


def test_always_equal_object_fails_every_mbpp_problem() -> None:
    for ex in MBPP_SAMPLE:
        assert MBPP.grade(_answer("", ALWAYS_EQUAL.format(name=ex.meta["entry_point"])), ex) == 0.0


def test_rigged_builtin_subclasses_are_judged_by_their_real_value() -> None:
    # A str/int/list subclass that claims equality with everything goes as its plain value.
    code = textwrap.dedent(
        """
        class S(str):
            __eq__ = lambda self, other: True
            __hash__ = str.__hash__
        class I(int):
            __eq__ = lambda self, other: True
            __hash__ = int.__hash__
        class L(list):
            __eq__ = lambda self, other: True
        def s(): return S("wrong")
        def i(): return I(-1)
        def l(): return L([0])
        """
    )
    for test in ("assert s() == 'right'", "assert i() == 3", "assert l() == [1, 2]"):
        r = run_tests(code, test + "\n")
        assert r.status == "failed" and "AssertionError" in r.stderr, test
    # ... while legitimate subclasses (Counter, namedtuple) compare as their data.
    ok = "import collections\ndef c(): return collections.Counter('aab')\n"
    assert run_tests(ok, "assert c() == {'a': 2, 'b': 1}\n").passed


def test_tests_are_nowhere_the_candidate_can_look() -> None:
    marker = "TESTMARK" + secrets.token_hex(8)
    search = textwrap.dedent(
        """
        import gc, os, re, sys
        pattern = re.compile("TEST" + "MARK([0-9a-f]{16})")  # the test knows the rest
        found = set()
        def look(where, text):
            found.update(pattern.findall(text))
        look("argv", repr(sys.argv))
        look("environ", repr(dict(os.environ)))
        for o in gc.get_objects():
            try:
                look("gc", repr(o)[:100000])
            except Exception:
                pass
        for f in sys._current_frames().values():
            while f is not None:
                look("frame", repr(f.f_locals)[:100000] + repr(f.f_globals)[:100000])
                f = f.f_back
        system = ("/proc", "/sys", "/dev", "/usr", "/lib", "/lib64", "/bin", "/sbin")
        paths = [f"/proc/{p}/{w}" for p in os.listdir("/proc") if p.isdigit()
                 for w in ("cmdline", "environ")]
        for dirpath, dirs, files in os.walk("/"):
            if dirpath.startswith(system):  # the read-only system binds and kernel files
                dirs[:] = []
                continue
            paths += [os.path.join(dirpath, name) for name in files]
        for p in paths:
            try:
                with open(p, "rb") as fh:
                    look(p, fh.read(1 << 20).decode("latin-1"))
            except Exception:
                pass
        try:  # our own memory, every readable mapping
            with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb") as mem:
                for line in maps:
                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                    if "r" in line.split()[1] and hi - lo < (256 << 20):
                        try:
                            mem.seek(lo)
                            look("mem", mem.read(hi - lo).decode("latin-1"))
                        except Exception:
                            pass
        except OSError:
            pass
        print("FOUND", sorted(found))
        def f():
            return 1
        """
    )
    r = run_tests(search, f"# {marker}\nassert f() == 1, {marker!r}\n", timeout_s=60)
    assert r.passed, r.stderr[-2000:]
    assert r.stdout.startswith("FOUND"), r.stdout
    assert marker[len("TESTMARK") :] not in r.stdout  # argv, env, files, /proc, gc, frames, memory


def test_reading_the_mbpp_tests_from_the_program_file_fails() -> None:
    ex = MBPP_SAMPLE[0]
    entry = ex.meta["entry_point"]
    cheat = textwrap.dedent(
        f"""
        import re
        src = open("program.py").read()
        ANSWERS = {{}}
        for m in re.finditer(r"assert {entry}\\((.*)\\) == (.*)", src):
            ANSWERS[m.group(1)] = eval(m.group(2))
        print("asserts seen:", len(ANSWERS))
        def {entry}(*args):
            for k, v in ANSWERS.items():
                if eval("(" + k + ",)") == args:
                    return v
        """
    )
    r = MBPP.run(_answer(entry, cheat), ex)
    assert not r.passed
    assert "asserts seen: 0" in r.stdout


def _evaluator_with_secret(code: str, secret: str) -> dict:
    """A separate evaluator process with a secret in its environment runs ``code``."""
    script = (
        "import json, sys\n"
        "from moagraph.tasks.grading import run_code\n"
        "r = run_code(sys.stdin.read(), timeout_s=20)\n"
        "print(json.dumps({'status': r.status, 'stdout': r.stdout, 'stderr': r.stderr}))\n"
    )
    env = dict(os.environ, MOAGRAPH_PLANTED_SECRET=secret)
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


PROC_SNOOP = textwrap.dedent(
    """
    import os
    hits, seen = [], 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        seen += 1
        for what in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{what}", "rb") as f:
                    if SECRET.encode() in f.read():
                        hits.append(pid)
            except OSError:
                pass
    print("pids", seen, "hits", hits, "ppid", os.getppid())
    """
)


@isolated
def test_evaluator_environment_is_invisible() -> None:
    secret = "sk-planted-" + secrets.token_hex(12)
    res = _evaluator_with_secret(f"SECRET = {secret!r}\n" + PROC_SNOOP, secret)
    assert res["status"] == "passed", res["stderr"]
    assert "hits []" in res["stdout"]
    assert secret not in res["stdout"]


@isolated
def test_nothing_written_outside_survives_the_run() -> None:
    tag = "moagraph-attack-" + secrets.token_hex(6)
    code = textwrap.dedent(
        f"""
        import os
        written = []
        for d in ("/dev/shm", "/tmp", "/var/tmp", os.environ.get("HOME", "/work"), "/work", "/"):
            try:
                with open(os.path.join(d, {tag!r}), "w") as f:
                    f.write("left behind")
                written.append(d)
            except OSError:
                pass
        print("wrote", written)
        """
    )
    r = run_code(code)
    assert r.passed and "/dev/shm" in r.stdout and "/tmp" in r.stdout, r.stderr
    for d in ("/dev/shm", "/tmp", "/var/tmp", os.path.expanduser("~"), "/"):
        assert not Path(d, tag).exists(), d


def _processes_with(marker: str) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    pids.append(int(name))
            except OSError:
                pass
    return pids


@isolated
def test_background_processes_are_gone_afterwards() -> None:
    marker = f"1000.{secrets.randbelow(10**9)}"
    code = textwrap.dedent(
        f"""
        import os, subprocess
        subprocess.Popen(["sleep", {marker!r}], start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", {marker!r}])
            os._exit(0)
        print("started")
        """
    )
    r = run_code(code, timeout_s=10)
    assert r.passed and "started" in r.stdout, r.stderr
    assert _processes_with(marker) == []
    # Also when the run is killed for time while its children run.
    r = run_code(code + "import time\ntime.sleep(100)\n", timeout_s=1.5)
    assert r.status == "timeout"
    assert _processes_with(marker) == []


@isolated
def test_candidate_cannot_kill_or_see_the_evaluator() -> None:
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        code = textwrap.dedent(
            f"""
            import os, signal
            for target in (-1, {os.getpid()}, {bystander.pid}):
                try:
                    os.kill(target, signal.SIGKILL)
                    print("killed", target)
                except OSError as e:
                    print("refused", target, type(e).__name__)
            print("ppid", os.getppid())
            """
        )
        r = run_code(code)
        assert r.passed, r.stderr
        assert "killed" not in r.stdout
        assert "ppid 0" in r.stdout  # no parent in its PID namespace
        assert bystander.poll() is None  # a host process of ours is untouched
    finally:
        bystander.kill()
        bystander.wait()


@isolated
def test_raw_syscall_connect_to_a_loopback_listener_is_refused() -> None:
    # ctypes connect(2) skips the audit hook: only the network namespace stops it.
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.3)
    port = srv.getsockname()[1]
    accepted: list[object] = []

    def serve() -> None:
        try:
            accepted.append(srv.accept())
        except OSError:
            pass

    t = threading.Thread(target=serve)
    t.start()
    code = textwrap.dedent(
        f"""
        import ctypes, struct, socket
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.socket(2, 1, 0)
        addr = struct.pack("!HH4s8x", 2, {port}, socket.inet_aton("127.0.0.1"))
        addr = struct.pack("=H", 2) + addr[2:]
        rc = libc.connect(fd, addr, len(addr))
        print("connect", rc, ctypes.get_errno())
        assert rc == 0
        """
    )
    try:
        r = run_code(code, timeout_s=10)
    finally:
        t.join()
        srv.close()
    assert r.status == "failed" and "connect -1" in r.stdout, (r.stdout, r.stderr)
    assert accepted == []


def test_unisolated_machine_refuses_without_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a kernel without user namespaces: run_code must refuse, or warn with the flag."""
    import moagraph.tasks.grading.sandbox as sb

    fake = sb.SandboxCapabilities(
        python=CAPS.python,
        drops_privileges=CAPS.drops_privileges,
        network_namespace=False,
        isolated=False,
        why_not="simulated",
    )
    monkeypatch.setattr(sb, "sandbox_capabilities", lambda: fake)
    monkeypatch.delenv(sb.UNSAFE_ENV, raising=False)
    with pytest.raises(SandboxError, match=sb.UNSAFE_ENV):
        sb.run_code("print(1)\n")
    monkeypatch.setattr(sb, "_warned", False)
    with pytest.warns(RuntimeWarning, match="WITHOUT isolation"):
        r = sb.run_code("print(1)\n", allow_unisolated=True)
    assert r.passed and r.stdout.strip() == "1"
    # Even unisolated, the grading attacks fail: the verdict is the judge's.
    ex = HE_SAMPLE[0]
    assert (
        sb.run_tests(
            ex.question + "    pass\n" + FORGED,
            ex.reference + "\n",
            prelude=ex.question,
            names=[ex.meta["entry_point"]],
            allow_unisolated=True,
        ).status
        != "passed"
    )


NONROOT_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, os, sys
    spec = importlib.util.spec_from_file_location("sbx", sys.argv[1])
    sbx = sys.modules["sbx"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sbx)
    out = {"uid": os.getuid()}
    caps = sbx.sandbox_capabilities()
    out["isolated"] = caps.isolated
    try:
        out["ok"] = sbx.run_tests("def f(x):\\n    return x + 1\\n", "assert f(1) == 2\\n", names=["f"]).status
    except sbx.SandboxError as e:
        out["refused"] = str(e)
        print(json.dumps(out))
        sys.exit(0)
    out["forged"] = sbx.run_tests(sys.argv[2], "assert f(1) == 2\\n", names=["f"]).status
    r = sbx.run_code(sys.argv[3])
    out["snoop"] = [r.status, r.stdout]
    r = sbx.run_code("open('/dev/shm/' + %r, 'w').write('x')\\nopen('/tmp/' + %r, 'w').write('x')\\n")
    out["shm"] = [r.status, os.path.exists('/dev/shm/' + %r), os.path.exists('/tmp/' + %r)]
    r = sbx.run_code("import os\\nprint(sorted(os.listdir('/')))\\n")
    out["root_listing"] = r.stdout
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"
)
def test_non_root_evaluator_is_isolated_or_refuses() -> None:
    """The sandbox as an ordinary user (uid 65534): the attacks fail there too."""
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        pytest.skip("no system python3 for the unprivileged user")
    tag = "moagraph-nonroot-" + secrets.token_hex(6)
    secret = "sk-nonroot-" + secrets.token_hex(12)
    script = NONROOT_SCRIPT.replace("%r", repr(tag))
    readable = Path(tempfile.mkdtemp(prefix="moagraph-nonroot-test-"))  # pytest's tmp is 0700
    try:
        copy = readable / "sandbox.py"  # a copy the unprivileged user can read
        shutil.copy(SANDBOX_PY, copy)
        readable.chmod(0o755)
        copy.chmod(0o644)
        env = {"PATH": "/usr/bin:/bin", "MOAGRAPH_PLANTED_SECRET": secret, "HOME": "/nonexistent"}
        proc = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                python,
                "-I",
                "-c",
                script,
                str(copy),
                "def f(x):\n    pass\n" + FORGED,
                f"SECRET = {secret!r}\n" + PROC_SNOOP,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            cwd="/",
        )
    finally:
        shutil.rmtree(readable, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["uid"] == 65534
    if "refused" in out:  # no user namespaces for this user: refusing is the right answer
        assert not out["isolated"] and "MOAGRAPH_UNSAFE_SANDBOX" in out["refused"]
        return
    assert out["isolated"] and out["ok"] == "passed"
    assert out["forged"] == "failed"
    status, stdout = out["snoop"]
    assert status == "passed" and "hits []" in stdout and secret not in stdout
    assert out["shm"] == ["passed", False, False]
    assert "'home'" not in out["root_listing"] and "'root'" not in out["root_listing"]
    assert "'work'" in out["root_listing"]
