"""Run untrusted (model-written) Python in a throw-away, locked-down subprocess.

Why a subprocess and not ``exec``: model code loops forever, eats memory,
forks, deletes files and opens sockets. Each run gets

* its own temp dir as cwd, HOME and TMPDIR (owned by the sandbox user);
* a fresh unprivileged uid/gid when we are root (a different one per run, so
  concurrent runs cannot touch each other and ``RLIMIT_NPROC``, which root
  ignores, really caps forks), chosen at random from a range no account uses;
* rlimits: address space (memory), file size, process count, CPU seconds,
  open files, no core dumps;
* a new, empty network namespace (``unshare --net``) when permitted, plus an
  audit hook in the child that refuses socket connects/binds/lookups;
* a wall-clock limit: on timeout the whole process group is killed, and every
  process still owned by the run's uid is swept (forks that left the group).

``passed`` means the program ran to its last line: an exception, ``exit()``
or ``os._exit`` before the end all count as failures.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SandboxStatus = Literal["passed", "failed", "timeout", "memory", "error"]

_OUTPUT_KEEP = 32_000  # characters of stdout/stderr kept in the result
_UID_BASE = 3_000_000  # sandbox uids live in [_UID_BASE, _UID_BASE + _UID_SPAN)
_UID_SPAN = 1_000_000

# Exit codes of the runner below.
_RC_EXCEPTION, _RC_SYNTAX, _RC_MEMORY, _RC_EXIT = 11, 12, 13, 14

# Executed by the sandbox interpreter with ``-I -S -c``; argv: marker fd, uid,
# memory bytes, file-size bytes, max processes, cpu seconds.
_RUNNER = r"""
import os, sys, resource
fd, uid, mem, fsize, nproc, cpu = (int(a) for a in sys.argv[1:7])
os.set_inheritable(fd, False)
def _lim(which, value):
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass
_lim(resource.RLIMIT_CORE, 0)
_lim(resource.RLIMIT_NOFILE, 256)
_lim(resource.RLIMIT_CPU, cpu)
_lim(resource.RLIMIT_FSIZE, fsize)
_lim(resource.RLIMIT_NPROC, nproc)
if uid >= 0:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
_lim(resource.RLIMIT_AS, mem)
_BLOCKED = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
            "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"}
def _hook(event, args):
    if event in _BLOCKED:
        raise PermissionError("network access is disabled in the sandbox (" + event + ")")
sys.addaudithook(_hook)
del _hook, _lim
try:
    with open("program.py", encoding="utf-8") as f:
        _src = f.read()
    _code = compile(_src, "program.py", "exec")
except (SyntaxError, ValueError) as e:
    import traceback
    traceback.print_exc()
    os._exit(12)
_g = {"__name__": "__main__", "__builtins__": __builtins__}
try:
    exec(_code, _g)
except MemoryError:
    sys.stderr.write("MemoryError\n")
    sys.stderr.flush()
    os._exit(13)
except SystemExit as e:
    sys.stderr.write("program called exit(%r) before its end\n" % (e.code,))
    sys.stderr.flush()
    os._exit(14)
except BaseException:
    try:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(11)
try:
    sys.stdout.flush()
    sys.stderr.flush()
except BaseException:
    os._exit(11)
os.write(fd, b"1")
os._exit(0)
"""


class SandboxError(RuntimeError):
    """The sandbox itself could not run (no usable interpreter, cannot spawn)."""


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: SandboxStatus
    stdout: str
    stderr: str
    duration_s: float
    returncode: int | None = None


@dataclass(frozen=True)
class SandboxCapabilities:
    """What isolation this machine allows; tests and reports print it."""

    python: str
    drops_privileges: bool
    network_namespace: bool


def _world_executable(path: Path) -> bool:
    """Whether an unprivileged user can reach and execute ``path``."""
    try:
        path = path.resolve()
        if not path.stat().st_mode & stat.S_IXOTH:
            return False
        for parent in path.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


def _probe(cmd: list[str], uid: int) -> bool:
    """Whether ``cmd`` can run the runner as ``uid`` and import the stdlib."""
    with tempfile.TemporaryDirectory(prefix="moagraph-probe-") as d:
        Path(d, "program.py").write_text("import json, math, collections, re\n", encoding="utf-8")
        if uid >= 0:
            os.chown(d, uid, uid)
        r, w = os.pipe()
        args = [*cmd, "-I", "-S", "-c", _RUNNER, str(w), str(uid), str(512 << 20), str(1 << 20),
                "64", "5"]
        try:
            proc = subprocess.run(
                args, cwd=d, env={"HOME": d}, pass_fds=(w,), capture_output=True, timeout=30, check=False,
                start_new_session=True,
            )
            os.close(w)
            w = -1
            ok = proc.returncode == 0 and os.read(r, 1) == b"1"
        except (OSError, subprocess.SubprocessError):
            ok = False
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
    return ok


@functools.lru_cache(maxsize=1)
def sandbox_capabilities() -> SandboxCapabilities:
    """Pick the interpreter and isolation once per process (probing costs ~50 ms).

    As root we need an interpreter the dropped uid can execute (a pyenv Python
    under /root is not); we try this one, then system Pythons.
    """
    candidates: list[str] = []
    for c in (getattr(sys, "_base_executable", ""), sys.executable,
              "/usr/bin/python3", "/usr/local/bin/python3",
              shutil.which("python3") or ""):
        if c and Path(c).exists():
            real = str(Path(c).resolve())
            if real not in candidates:
                candidates.append(real)
    if not candidates:
        raise SandboxError("no Python interpreter found for the code sandbox")
    root = os.geteuid() == 0
    probe_uid = _UID_BASE + _UID_SPAN - 1
    python = candidates[0]
    drops = False
    if root:
        for c in candidates:
            if _world_executable(Path(c)) and _probe([c], probe_uid):
                python, drops = c, True
                break
    unshare = shutil.which("unshare")
    netns = False
    if unshare and root:
        netns = _probe([unshare, "--net", python], probe_uid if drops else -1)
    return SandboxCapabilities(python=python, drops_privileges=drops, network_namespace=netns)


def _uid_processes(uid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in (b"Z", b"X"):
            pids.append(int(name))
    return pids


def _sweep(uid: int, pgid: int) -> None:
    """Kill the process group and anything else the run's uid still owns."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid < 0:
        return
    for _ in range(200):
        pids = _uid_processes(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)


def _read_capped(path: Path, keep_tail: bool) -> str:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size > _OUTPUT_KEEP:
                if keep_tail:
                    f.seek(size - _OUTPUT_KEEP)
                data = f.read(_OUTPUT_KEEP)
            else:
                data = f.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def run_code(
    code: str,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    *,
    max_file_mb: int = 16,
    max_procs: int = 32,
) -> SandboxResult:
    """Run ``code`` as a Python program in the sandbox and say how it ended.

    Blocking; use :func:`arun_code` from async code.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0 (got {timeout_s}); pass a positive number of seconds")
    if memory_mb < 32:
        raise ValueError(f"memory_mb must be >= 32 (got {memory_mb}); Python itself needs ~20 MB")
    caps = sandbox_capabilities()
    uid = _UID_BASE + secrets.randbelow(_UID_SPAN - 1) if caps.drops_privileges else -1
    nproc = max_procs
    if uid < 0 and os.geteuid() != 0:
        # RLIMIT_NPROC counts every process of our user, not just this run's.
        nproc = max_procs + len(_uid_processes(os.getuid()))
    work = Path(tempfile.mkdtemp(prefix="moagraph-sbx-"))
    logs = Path(tempfile.mkdtemp(prefix="moagraph-sbx-log-"))
    r_fd = w_fd = -1
    try:
        (work / "program.py").write_text(code, encoding="utf-8")
        if uid >= 0:
            os.chown(work, uid, uid)
            os.chown(work / "program.py", uid, uid)
        os.chmod(work, 0o700)
        r_fd, w_fd = os.pipe()
        os.set_blocking(r_fd, False)
        cmd = [caps.python, "-I", "-S", "-c", _RUNNER, str(w_fd), str(uid),
               str(memory_mb << 20), str(max_file_mb << 20), str(nproc),
               str(int(timeout_s) + 2)]
        if caps.network_namespace:
            cmd = [shutil.which("unshare") or "unshare", "--net", *cmd]
        env = {"HOME": str(work), "TMPDIR": str(work), "PATH": "/usr/bin:/bin",
               "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
        out_path, err_path = logs / "stdout", logs / "stderr"
        start = time.perf_counter()
        with open(out_path, "wb") as out_f, open(err_path, "wb") as err_f:
            try:
                proc = subprocess.Popen(
                    cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out_f,
                    stderr=err_f, pass_fds=(w_fd,), start_new_session=True,
                )
            except OSError as e:
                raise SandboxError(f"cannot start the code sandbox: {e}") from e
            os.close(w_fd)
            w_fd = -1
            timed_out = False
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _sweep(uid, proc.pid)
            if timed_out:
                rc = proc.wait()
        duration = time.perf_counter() - start
        try:
            marker = os.read(r_fd, 1) == b"1"
        except BlockingIOError:
            marker = False
        stdout = _read_capped(out_path, keep_tail=False)
        stderr = _read_capped(err_path, keep_tail=True)
    finally:
        for fd in (r_fd, w_fd):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
    status = _status(rc, marker, timed_out, stderr)
    return SandboxResult(status == "passed", status, stdout, stderr, duration, rc)


def _status(rc: int, marker: bool, timed_out: bool, stderr: str) -> SandboxStatus:
    if timed_out or rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "timeout"
    if rc == 0 and marker:
        return "passed"
    if rc == _RC_MEMORY or "MemoryError" in stderr[-2000:]:
        return "memory"
    if rc in (-signal.SIGKILL, -signal.SIGSEGV):  # the kernel's answer to memory exhaustion
        return "memory"
    if rc == _RC_SYNTAX or rc == -signal.SIGXFSZ:
        return "error"
    return "failed"


async def arun_code(
    code: str, timeout_s: float = 10.0, memory_mb: int = 512, **kwargs: int
) -> SandboxResult:
    """:func:`run_code` in a worker thread, so an event loop keeps serving."""
    return await asyncio.to_thread(run_code, code, timeout_s, memory_mb, **kwargs)
