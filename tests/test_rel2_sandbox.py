"""Issue #25, round 2 of the sandbox probe: each attack runs for real and must fail.

- the evaluator's kernel session keyring (keyctl), as root and as an ordinary user;
- memory no rlimit counts (memfd, memfd_secret, SysV shm, files in /dev/shm);
- ``MOAGRAPH_UNSAFE_SANDBOX=1`` (no namespaces): the candidate reads the nonce from the
  evaluator's memory through /proc and writes a forged verdict on its pipe;
- ``kill -9`` of the evaluator mid-grade: nothing may stay behind in the temp dir.

The ordinary-user cases run a copy of ``sandbox.py`` (stdlib only) under the system
Python as uid 65534 through ``setpriv``, as ``test_sandbox_attacks`` does.
"""

from __future__ import annotations

import ast
import ctypes
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import moagraph.tasks.grading.sandbox as sb
from moagraph.tasks.grading import sandbox_capabilities

CAPS = sandbox_capabilities()
ROOT = Path(__file__).resolve().parents[1]
SANDBOX_PY = ROOT / "src" / "moagraph" / "tasks" / "grading" / "sandbox.py"
SYSTEM_PYTHON = "/usr/bin/python3"
isolated = pytest.mark.skipif(not CAPS.isolated, reason=f"no namespaces here: {CAPS.why_not}")
as_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs root, setpriv and a system python3 to act as an ordinary user",
)
KEYCTL = {"x86_64": (248, 250), "aarch64": (217, 219), "riscv64": (217, 219)}  # add_key, keyctl


def _keyctl_works() -> bool:
    nrs = KEYCTL.get(platform.machine())
    if nrs is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(nrs[1], 0, ctypes.c_long(-3), 0) >= 0  # KEYCTL_GET_KEYRING_ID @s


needs_keyctl = pytest.mark.skipif(
    not _keyctl_works(), reason="this kernel (or seccomp profile) has no keyctl"
)


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A directory uid 65534 can read (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="moagraph-rel2-test-"))
    d.chmod(0o755)
    shutil.copy(SANDBOX_PY, d / "sandbox.py")
    (d / "sandbox.py").chmod(0o644)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _run_script(script: str, d: Path, *args: str, non_root: bool) -> dict:
    path = d / "script.py"
    path.write_text(script, encoding="utf-8")
    path.chmod(0o644)
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if non_root else []
    proc = subprocess.run(
        [*prefix, SYSTEM_PYTHON, "-I", str(path), str(d / "sandbox.py"), *args],
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- 1. the kernel keyring ------------------------------------------------------------------

KEYRING_EVALUATOR = textwrap.dedent(
    """
    import ctypes, importlib.util, json, os, sys
    spec = importlib.util.spec_from_file_location("sbx", sys.argv[1])
    sbx = sys.modules["sbx"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sbx)
    add_key, keyctl = int(sys.argv[2]), int(sys.argv[3])
    secret = sys.argv[4].encode()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall(keyctl, 1, None)  # this test's own session keyring, the target
    key = libc.syscall(add_key, b"user", b"moagraph-planted", secret, len(secret), ctypes.c_long(-3))
    buf = ctypes.create_string_buffer(256)
    n = libc.syscall(keyctl, 11, ctypes.c_long(key), buf, 256)  # KEYCTL_READ: we can read it
    out = {"uid": os.getuid(), "key": key, "own_read": buf.raw[:n].decode() if n > 0 else n}
    caps = sbx.sandbox_capabilities()
    out["isolated"] = caps.isolated
    program = sys.argv[5].replace("KEY_ID", str(key))
    try:
        r = sbx.run_code(program, timeout_s=20)
        out["result"] = [r.status, r.stdout, r.stderr[-2000:]]
    except sbx.SandboxError as e:
        out["refused"] = str(e)
    print(json.dumps(out))
    """
)

KEYRING_ATTACK = textwrap.dedent(
    """
    import ctypes, os, subprocess
    libc = ctypes.CDLL(None, use_errno=True)
    KEYCTL = NR_KEYCTL
    out = {}
    sid = libc.syscall(KEYCTL, 0, ctypes.c_long(-3), 0)  # KEYCTL_GET_KEYRING_ID @s
    out["session_id"] = [sid, ctypes.get_errno()]
    buf = ctypes.create_string_buffer(4096)
    for name, key in (("session", -3), ("user", -4), ("planted", KEY_ID)):
        n = libc.syscall(KEYCTL, 11, ctypes.c_long(key), buf, 4096)  # KEYCTL_READ
        out[name] = [buf.raw[:n].hex() if n > 0 else n, ctypes.get_errno()]
    try:
        out["proc_keys"] = open("/proc/keys").read()
    except OSError as e:
        out["proc_keys"] = type(e).__name__
    try:
        out["keyctl_show"] = subprocess.run(["keyctl", "show", "@s"], capture_output=True,
                                            text=True, timeout=5).stdout
    except OSError as e:
        out["keyctl_show"] = type(e).__name__
    print(repr(out))
    """
)


@needs_keyctl
@as_root
@pytest.mark.parametrize("who", ["root", "non-root"])
def test_graded_code_cannot_read_the_evaluators_keyring(readable_dir: Path, who: str) -> None:
    add_key, keyctl = KEYCTL[platform.machine()]
    secret = "keyring-secret-" + secrets.token_hex(8)
    program = KEYRING_ATTACK.replace("NR_KEYCTL", str(keyctl))
    out = _run_script(
        KEYRING_EVALUATOR,
        readable_dir,
        str(add_key),
        str(keyctl),
        secret,
        program,
        non_root=who == "non-root",
    )
    assert out["own_read"] == secret  # the key is there, and readable by the evaluator
    if "refused" in out:
        assert not out["isolated"] and sb.UNSAFE_ENV in out["refused"]
        return
    status, stdout, stderr = out["result"]
    assert status == "passed", stderr
    assert secret not in stdout and secret.encode().hex() not in stdout
    seen = ast.literal_eval(stdout.strip())
    assert seen["session_id"][0] == -1 and seen["session_id"][1] == 1  # keyctl: EPERM
    for name in ("session", "user", "planted"):
        assert seen[name][0] == -1, (name, seen)
    assert "moagraph-planted" not in seen["proc_keys"]
    assert "moagraph-planted" not in seen["keyctl_show"]


# --- 2. memory that RLIMIT_AS does not count -----------------------------------------------

MEMORY_HOG = textwrap.dedent(
    """
    import ctypes, json, os
    libc = ctypes.CDLL(None, use_errno=True)
    MB = 1 << 20
    chunk = b"x" * (4 * MB)
    out = {}
    held = []
    total = 0
    while total < 256 * MB:  # four times the 64 MB limit
        try:
            fd = os.memfd_create("hog")
        except OSError as e:
            out["memfd_error"] = e.errno
            break
        held.append(fd)
        try:
            while True:  # each memfd up to RLIMIT_FSIZE (EFBIG), then the next one
                os.write(fd, chunk)
                total += len(chunk)
        except OSError:
            pass
    out["memfd_mb"] = total // MB
    SHMGET = SHMGET_NR
    seg = libc.syscall(SHMGET, 0, ctypes.c_size_t(64 * MB), 0o1600)  # IPC_PRIVATE|IPC_CREAT
    out["shmget"] = [seg, ctypes.get_errno()]
    MEMFD_SECRET = 447
    out["memfd_secret"] = [libc.syscall(MEMFD_SECRET, 0), ctypes.get_errno()]
    shm = 0
    try:
        for i in range(64):
            with open("/dev/shm/hog%d" % i, "wb") as f:
                for _ in range(2):
                    f.write(chunk)
                    f.flush()
                    shm += len(chunk)
    except OSError as e:
        out["shm_error"] = e.errno
    out["dev_shm_mb"] = shm // MB
    print(json.dumps(out))
    """
)


@isolated
def test_memfds_and_shared_memory_cannot_hold_memory_beyond_the_limit() -> None:
    """The probe held 768 MB against a 512 MB limit in memfds. Now memfd_create,
    memfd_secret and shmget fail (seccomp, EPERM) and /dev/shm is the run's size-capped
    tmpfs (4 x max_file_mb = 32 MB here)."""
    fd = os.memfd_create("control")  # the kernel has memfds: the refusal is the sandbox's
    os.close(fd)
    shmget = {"x86_64": 29, "aarch64": 194, "riscv64": 194}.get(platform.machine())
    if shmget is None:
        pytest.skip(f"no seccomp table for {platform.machine()}")
    r = sb.run_code(
        MEMORY_HOG.replace("SHMGET_NR", str(shmget)), timeout_s=30, memory_mb=64, max_file_mb=8
    )
    assert r.passed, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["memfd_mb"] == 0 and out["memfd_error"] == 1, out  # EPERM on the first one
    assert out["shmget"] == [-1, 1], out
    assert out["memfd_secret"][0] == -1, out
    assert out["dev_shm_mb"] <= 32 and out["shm_error"] in (27, 28), out  # EFBIG / ENOSPC


# --- 3. MOAGRAPH_UNSAFE_SANDBOX: the nonce through /proc ------------------------------------

# The probe's attack: find the evaluator (the judge's parent), read its memory through
# /proc/<pid>/mem for the nonce, then write a forged "passed" frame with it on every pipe
# it can open through /proc/<pid>/fd (the evaluator's and the judge's).
NONCE_THIEF = textwrap.dedent(
    """
    import os, re, time

    def f(x):
        return 0  # wrong: the honest verdict is "failed"

    found = {}
    judge = os.getppid()
    evaluator = int(open("/proc/%d/stat" % judge).read().rsplit(")", 1)[1].split()[1])
    nonces = set()
    for attempt in range(10):
        for who, pid in (("evaluator", evaluator), ("judge", judge)):
            try:
                maps = open("/proc/%d/maps" % pid).read().splitlines()
                mem = open("/proc/%d/mem" % pid, "rb", 0)
            except OSError as e:
                found["mem_" + who] = type(e).__name__
                continue
            found["mem_" + who] = "open"
            for line in maps:
                addr, perms = line.split()[:2]
                lo, hi = (int(x, 16) for x in addr.split("-"))
                if "r" not in perms or hi - lo > (256 << 20):
                    continue
                try:
                    mem.seek(lo)
                    nonces.update(re.findall(rb"(?:nonce|n)s32:([0-9a-f]{32})", mem.read(hi - lo)))
                except (OSError, ValueError, OverflowError):
                    continue
            mem.close()
        for who, pid in (("evaluator", evaluator), ("judge", judge)):
            try:
                found["environ_" + who] = len(open("/proc/%d/environ" % pid, "rb").read())
            except OSError as e:
                found["environ_" + who] = type(e).__name__
        if nonces:
            break
        time.sleep(0.05)
    found["nonces"] = len(nonces)
    wrote = 0
    for who, pid in (("evaluator", evaluator), ("judge", judge)):
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError as e:
            found["fd_" + who] = type(e).__name__
            continue
        for fd in fds:
            path = "/proc/%d/fd/%s" % (pid, fd)
            try:
                if not os.readlink(path).startswith("pipe:"):
                    continue
                w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue
            for n in nonces:
                body = b"o3:s1:ns32:" + n + b"s6:statuss6:passeds6:details0:"
                try:
                    os.write(w, len(body).to_bytes(4, "big") + body)
                    wrote += 1
                except OSError:
                    pass
            os.close(w)
    found["wrote"] = wrote
    print("ATTACK", sorted(found.items()), flush=True)
    """
)

UNSAFE_EVALUATOR = textwrap.dedent(
    """
    import importlib.util, json, os, sys, warnings
    spec = importlib.util.spec_from_file_location("sbx", sys.argv[1])
    sbx = sys.modules["sbx"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sbx)
    real = sbx.sandbox_capabilities()
    # A kernel without user namespaces, as the probe's MOAGRAPH_UNSAFE_SANDBOX=1 run had.
    fake = sbx.SandboxCapabilities(python=real.python, drops_privileges=real.drops_privileges,
                                   network_namespace=False, isolated=False, why_not="simulated")
    sbx.sandbox_capabilities = lambda: fake
    os.environ[sbx.UNSAFE_ENV] = "1"
    out = {"uid": os.getuid(), "drops": real.drops_privileges}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out["honest"] = sbx.run_tests("def f(x):\\n    return 2\\n", "assert f(1) == 2\\n",
                                      names=["f"]).status
        out["warning"] = str(w[0].message) if w else ""
    out["forged"] = []
    for _ in range(int(sys.argv[3])):
        r = sbx.run_tests(sys.argv[2], "assert f(1) == 2\\n", names=["f"], timeout_s=20)
        out["forged"].append([r.status, r.stdout.strip()[-600:]])
    print(json.dumps(out))
    """
)


@as_root
@pytest.mark.parametrize("who", ["non-root", "root"])
def test_unsafe_mode_candidate_cannot_steal_the_nonce_and_forge(
    readable_dir: Path, who: str
) -> None:
    """Unisolated (no namespaces), the candidate shares the evaluator's uid (non-root) and
    reads /proc/<evaluator>/mem: the probe forged 18/20 HumanEval verdicts so. Now the
    evaluator and the judge are undumpable and the judge gets the nonce only after that."""
    out = _run_script(UNSAFE_EVALUATOR, readable_dir, NONCE_THIEF, "5", non_root=who == "non-root")
    assert out["uid"] == (65534 if who == "non-root" else 0)
    assert out["honest"] == "passed"  # the hardening does not break honest grading
    assert "WITHOUT isolation" in out["warning"]
    statuses = [s for s, _ in out["forged"]]
    assert statuses == ["failed"] * 5, out["forged"]
    for _, stdout in out["forged"]:
        assert "('nonces', 0)" in stdout and "('wrote', 0)" in stdout, stdout
        assert "('mem_evaluator', 'PermissionError')" in stdout, stdout
        assert "('environ_evaluator', 'PermissionError')" in stdout, stdout


# --- 4. kill -9 of the evaluator mid-grade ----------------------------------------------------

KILLED_EVALUATOR = textwrap.dedent(
    """
    import os, sys
    import moagraph.tasks.grading.sandbox as sbx
    if sys.argv[1] == "unisolated":
        real = sbx.sandbox_capabilities()
        fake = sbx.SandboxCapabilities(python=real.python, drops_privileges=real.drops_privileges,
                                       network_namespace=False, isolated=False, why_not="test")
        sbx.sandbox_capabilities = lambda: fake
    program = '''
    import os, sys, time
    sys.stdout.write("o" * (4 << 20))
    sys.stdout.flush()
    os.makedirs("deep/locked", exist_ok=True)
    open("deep/locked/f", "wb").write(b"y" * (1 << 20))
    os.chmod("deep/locked", 0)
    open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "left"), "wb").write(b"z" * 1000)
    print("ready", flush=True)
    time.sleep(120)
    '''
    sbx.run_code(program.replace("\\n    ", "\\n"), timeout_s=200, allow_unisolated=True)
    """
)


def _children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        out.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


@pytest.fixture
def private_tmp() -> Iterator[Path]:
    """A TMPDIR of our own, reachable by the sandbox's throw-away uid (like /tmp)."""
    d = Path(tempfile.mkdtemp(prefix="moagraph-rel2-tmp-"))
    d.chmod(0o1777)
    try:
        yield d
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(d)], check=False, capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("mode", ["isolated", "unisolated"])
def test_kill_9_of_the_evaluator_leaves_nothing_behind(private_tmp: Path, mode: str) -> None:
    """The probe found temp dirs and up to 32 MB of output left in /tmp. Now the output
    files have no name, and the judge (PR_SET_PDEATHSIG) kills the candidate and removes
    the run's directory when the evaluator dies."""
    if mode == "isolated" and not CAPS.isolated:
        pytest.skip(f"no namespaces here: {CAPS.why_not}")
    env = {
        **os.environ,
        "TMPDIR": str(private_tmp),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    evaluator = subprocess.Popen([sys.executable, "-c", KILLED_EVALUATOR, mode], env=env)
    deadline = time.monotonic() + 60
    run_pids: list[int] = []
    while time.monotonic() < deadline:  # until the judge has its candidate, mid-program
        judges = _children(evaluator.pid)
        run_pids = judges + [c for j in judges for c in _children(j)]
        if len(run_pids) >= 2 and list(private_tmp.iterdir()):
            break
        time.sleep(0.05)
    assert len(run_pids) >= 2, "the sandbox run did not start"
    time.sleep(2.0)  # the program writes its output and files, then sleeps
    names = [p.name for p in private_tmp.iterdir()]
    assert len(names) == 1 and names[0].startswith(f"moagraph-sbx-{evaluator.pid}-"), names
    evaluator.kill()
    evaluator.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (
        list(private_tmp.iterdir()) or any(_alive(p) for p in run_pids)
    ):
        time.sleep(0.05)
    assert not [p for p in run_pids if _alive(p)], "sandbox processes outlived the evaluator"
    assert list(private_tmp.iterdir()) == [], "files outlived the evaluator"


def test_a_later_run_sweeps_a_dead_evaluators_directory(private_tmp: Path) -> None:
    """If the judge could not clean up either (e.g. it was SIGSTOPped), the next
    evaluator's first run removes directories whose evaluator pid is gone."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = private_tmp / f"moagraph-sbx-{gone.pid}-abcd"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "f").write_bytes(b"x" * 1000)
    (stale / "sub").chmod(0)
    alive = private_tmp / f"moagraph-sbx-{os.getpid()}-live"  # ours, alive: kept
    alive.mkdir()
    script = (
        "import moagraph.tasks.grading.sandbox as s\n"
        "print(s.run_code('print(1)', allow_unisolated=True).status)\n"
    )
    env = {
        **os.environ,
        "TMPDIR": str(private_tmp),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "passed", out.stderr
    assert not stale.exists()
    assert alive.exists()
