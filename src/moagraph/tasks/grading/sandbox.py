"""Run untrusted (model-written) Python in a throw-away, isolated subprocess.

Model code loops forever, eats memory, forks, deletes files, opens sockets,
and (when it is rewarded for passing tests) attacks the grader itself. Each
layer below exists because an attack got through without it.

Two processes, so the verdict cannot be forged
    A *judge* process runs the task's tests; the model's code runs in a
    *candidate* process forked from it **before** the judge reads the tests
    (so they are never in its memory, argv, environment or files). The
    candidate only answers calls: the judge sends ``name(args)`` over a pipe
    and gets back plain data (exact ``int``/``float``/``complex``/``bool``/
    ``str``/``bytes``/``None``/``list``/``tuple``/``dict``/``set``/
    ``frozenset``, recursively) decoded by a strict decoder that can build
    nothing else. So an object whose ``==`` is always true, a forged "passed"
    byte, ``exit()`` before the asserts, or patched builtins all fail: the
    comparisons run in the judge on values it built itself, and the verdict
    travels on a pipe only the judge holds, tagged with a per-run nonce the
    candidate never sees. (An in-process secret guarded by audit hooks is not
    enough: frames reach it through tracebacks, generators, ``gc`` and more.)

Namespaces, so the candidate sees nothing of the host (root not needed)
    The judge enters new user, PID, network, IPC, UTS and cgroup namespaces
    (unprivileged user namespaces; as root it first drops to a fresh random
    uid, so the namespace maps to nobody real). The candidate then builds its
    own mount namespace: a size-capped tmpfs as ``/`` with read-only binds of
    ``/usr``, ``/lib*``, ``/bin`` and the interpreter's stdlib, a fresh
    ``/proc`` of its own PID namespace, fresh ``/tmp``, ``/var/tmp``,
    ``/dev/shm`` and ``/work`` (its cwd and HOME), ``pivot_root`` and the old
    root detached; then it drops every capability and sets no_new_privs. So
    it cannot read the evaluator's environment or home, see or signal other
    processes, reach any network (no interfaces but a down loopback), or
    leave files, shared memory or processes behind: it is PID 1 of its
    namespace, and when the judge kills it the kernel kills everything it
    started; its tmpfs and IPC objects vanish with it.

Kernel objects, so nothing outside the limits holds memory or secrets
    The candidate joins a fresh, empty session keyring (so does the judge) and a
    seccomp filter makes ``memfd_create``, ``memfd_secret``, SysV ``shmget``,
    ``add_key``, ``request_key`` and ``keyctl`` fail with EPERM (any foreign
    syscall ABI with ENOSYS): memfds and SysV segments hold memory that
    RLIMIT_AS does not count (the probe held 768 MB against a 512 MB limit), and
    keyrings can hold the evaluator's secrets. ``/proc/keys`` is masked.

Limits
    rlimits on address space, file size, process count, CPU seconds, open
    files, POSIX message queues and locked memory; a wall-clock limit after
    which the judge's process group is killed (the candidate dies with it
    through ``PR_SET_PDEATHSIG``). **There is no total memory cap**: RLIMIT_AS
    is per process, so a run can hold up to ``max_procs x memory_mb`` of
    address space plus its tmpfs (``4 x max_file_mb``, at least 16 MB). A total
    cap needs a cgroup (systemd-run, a container's memory limit); the sandbox
    does not create one. See docs/threat-model.md.

Nothing left behind
    stdout/stderr go to unnamed temporary files; the run's directory is named
    ``moagraph-sbx-<evaluator pid>-*``. If the evaluator dies mid-run (``kill
    -9``) the judge gets SIGTERM (``PR_SET_PDEATHSIG``), kills the candidate and
    everything it started, removes the directory and exits; a directory whose
    evaluator pid is gone is also removed by the next evaluator's first run.

Where user namespaces are not available (some containers), the sandbox
refuses to run unless ``MOAGRAPH_UNSAFE_SANDBOX=1`` or
``allow_unisolated=True`` is given, and then warns: the judge/candidate split,
the seccomp filter and the rlimits remain, as root the candidate still runs
under a throw-away uid, but it shares the host filesystem view, network and
process table. As an ordinary user the candidate then has the evaluator's
uid: the evaluator makes itself undumpable (``PR_SET_DUMPABLE=0``, for the
rest of its life: no core dumps, no debugger) and so does the judge, so the
candidate can neither read their memory or environment through ``/proc`` nor
open their pipes there, and the judge is sent the nonce only once ``/proc``
shows it undumpable. It can still read every file the user can, signal the
user's other processes and use the network.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

SandboxStatus = Literal["passed", "failed", "timeout", "memory", "error"]

UNSAFE_ENV = "MOAGRAPH_UNSAFE_SANDBOX"
_OUTPUT_KEEP = 32_000  # characters of stdout/stderr kept in the result
_UID_BASE = 3_000_000  # sandbox uids live in [_UID_BASE, _UID_BASE + _UID_SPAN)
_UID_SPAN = 1_000_000
_STATUSES = ("passed", "failed", "timeout", "memory", "error")

# A tiny codec for None/bool/int/float/str/list/dict-with-str-keys (json costs
# the judge ~13 ms of imports per run). Shared by the evaluator and the judge.
_CODEC = r"""
def _dumps(o):
    out = []

    def w(v):
        t = type(v)
        if v is None:
            out.append(b"N")
        elif v is True:
            out.append(b"T")
        elif v is False:
            out.append(b"F")
        elif t is int:
            out.append(b"i%d;" % v)
        elif t is float:
            out.append(b"f" + repr(v).encode() + b";")
        elif t is str:
            b = v.encode("utf-8", "surrogatepass")
            out.append(b"s%d:" % len(b))
            out.append(b)
        elif t is list:
            out.append(b"l%d:" % len(v))
            for x in v:
                w(x)
        elif t is dict:
            out.append(b"o%d:" % len(v))
            for k, x in v.items():
                w(k)
                w(x)
        else:
            raise TypeError("cannot encode %s" % t.__name__)

    w(o)
    return b"".join(out)


def _loads(data, hook=None):
    pos = 0

    def num(end):
        nonlocal pos
        j = data.index(end, pos)
        text = data[pos:j]
        pos = j + 1
        return text

    def count():
        n = int(num(b":"))
        if n < 0:
            raise ValueError("negative length")
        return n

    def r(depth):
        nonlocal pos
        if depth > 800:
            raise ValueError("nested too deep")
        c = data[pos:pos + 1]
        pos += 1
        if c == b"N":
            return None
        if c == b"T":
            return True
        if c == b"F":
            return False
        if c == b"i":
            return int(num(b";"))
        if c == b"f":
            return float(num(b";"))
        if c == b"s":
            n = count()
            b = data[pos:pos + n]
            if len(b) != n:
                raise ValueError("truncated")
            pos += n
            return b.decode("utf-8", "surrogatepass")
        if c == b"l":
            return [r(depth + 1) for _ in range(count())]
        if c == b"o":
            d = {}
            for _ in range(count()):
                k = r(depth + 1)
                if type(k) is not str:
                    raise ValueError("bad key")
                d[k] = r(depth + 1)
            return hook(d) if hook is not None else d
        raise ValueError("bad data")

    v = r(0)
    if pos != len(data):
        raise ValueError("trailing data")
    return v
"""
_codec: dict = {}
exec(_CODEC, _codec)
_dumps, _loads = _codec["_dumps"], _codec["_loads"]

# The judge. Run by the sandbox interpreter as ``python -I -S -c _RUNNER
# <spec fd> <verdict fd>``. The spec pipe carries two frames: the candidate's
# part (code, limits), read before the fork, and the judge's part (nonce,
# tests), read after it.
_RUNNER = (
    _CODEC
    + r'''
import os, sys, signal, resource, builtins

NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET = (
    0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
# Syscalls the candidate may not make (seccomp, EPERM): memory that no rlimit counts
# (memfd_create, memfd_secret, SysV shmget) and the kernel keyrings (add_key,
# request_key, keyctl). Per machine: its audit arch, then the numbers in that order.
SECCOMP = {
    "x86_64": (0xC000003E, (319, 447, 29, 248, 249, 250)),
    "aarch64": (0xC00000B7, (279, 447, 194, 217, 218, 219)),
    "riscv64": (0xC00000F3, (279, 447, 194, 217, 218, 219)),
}
_STDLIB = set(getattr(sys, "stdlib_module_names", ())) - {
    "antigravity", "this", "turtle", "turtledemo", "tkinter", "idlelib", "webbrowser", "pydoc", "ensurepip"}
PLAIN = "int, float, complex, bool, str, bytes, None, list, tuple, dict, set, frozenset"
_libc = None


def _sys_err(what):
    import ctypes
    e = ctypes.get_errno()
    return OSError(e, "%s: %s" % (what, os.strerror(e)))


def _prctl(*args):
    if _libc is not None:
        import ctypes
        _libc.prctl(*(ctypes.c_ulong(a) for a in args))


def _send(fd, obj):
    data = _dumps(obj)
    data = len(data).to_bytes(4, "big") + data
    while data:
        data = data[os.write(fd, data):]


def _read(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _recv(fd, limit=64 << 20, hook=None):
    n = int.from_bytes(_read(fd, 4), "big")
    if n > limit:
        raise ValueError("message of %d bytes" % n)
    return _loads(_read(fd, n), hook)


class NotData(Exception):
    pass


def _enc(v, ref=None, depth=0):
    """Plain builtin data (exact types) as JSON; objects in JSON are type tags."""
    if depth > 500:
        raise NotData("data nested deeper than 500 levels")
    t = type(v)
    if v is None or t is bool or t is int or t is float or t is str:
        return v
    if t is list:
        return [_enc(x, ref, depth + 1) for x in v]
    if t is tuple:
        return {"t": [_enc(x, ref, depth + 1) for x in v]}
    if t is dict:
        return {"d": [[_enc(k, ref, depth + 1), _enc(x, ref, depth + 1)] for k, x in v.items()]}
    if t is set or t is frozenset:
        return {"s" if t is set else "F": [_enc(x, ref, depth + 1) for x in v]}
    if t is bytes:
        return {"b": v.hex()}
    if t is complex:
        return {"c": [v.real, v.imag]}
    # Subclasses (Counter, OrderedDict, namedtuple, IntEnum, a str with a rigged
    # __eq__ ...) go as their underlying plain value, read with the base type's
    # own methods: whatever they override never reaches the judge.
    for base, conv in ((int, int.__int__), (float, float.__float__), (str, str.__str__),
                       (bytes, lambda x: bytes(memoryview(x))), (complex, complex.__complex__),
                       (list, lambda x: list(list.__iter__(x))), (tuple, lambda x: tuple(tuple.__iter__(x))),
                       (dict, lambda x: dict(dict.items(x))), (set, lambda x: set(set.__iter__(x))),
                       (frozenset, lambda x: frozenset(frozenset.__iter__(x)))):
        if issubclass(t, base):
            return _enc(conv(v), ref, depth + 1)
    tag = ref(v) if ref is not None else None
    if tag is not None:
        return tag
    raise NotData("a %s.%s object" % (getattr(t, "__module__", "?"), getattr(t, "__qualname__", "?")))


_PROBLEMS = []


class Handle:
    """Judge side: an object the candidate answered with that is not plain data.

    It can only be passed back to the candidate; comparing, hashing, testing or
    reading it fails the run (so an object whose ``==`` is always true fails)."""

    __slots__ = ("n", "what")

    def __init__(self, n, what):
        self.n, self.what = n, what

    def __repr__(self):
        return "<candidate's %s object>" % self.what

    def _refuse(self, *args, **kwargs):
        _PROBLEMS.append("non-data answer")
        raise NotPlainData("the candidate answered with a %s object; only plain data (%s) counts "
                           "as an answer" % (self.what, PLAIN))

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = __bool__ = _refuse
    __len__ = __iter__ = __contains__ = __getitem__ = __getattr__ = __call__ = _refuse
    __str__ = __format__ = __int__ = __float__ = __index__ = __complex__ = __bytes__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = _refuse
    __floordiv__ = __mod__ = __pow__ = __neg__ = __abs__ = __round__ = __and__ = __or__ = _refuse


def _dec(o):
    """object_hook of the judge's decoder: only the tags above, exact types out."""
    if len(o) != 1:
        raise ValueError("bad tag")
    (k, x), = o.items()
    if k == "h" and type(x) is list and len(x) == 2 and type(x[0]) is int and type(x[1]) is str:
        return Handle(x[0], x[1][:200])
    if k in ("t", "s", "F", "d", "c") and type(x) is not list:
        raise ValueError("bad tag")
    if k == "t":
        return tuple(x)
    if k == "s":
        return set(x)
    if k == "F":
        return frozenset(x)
    if k == "d":
        out = {}
        for p in x:
            if type(p) is not list or len(p) != 2:
                raise ValueError("bad dict item")
            out[p[0]] = p[1]
        return out
    if k == "b" and type(x) is str:
        return bytes.fromhex(x)
    if k == "c" and len(x) == 2 and all(type(a) in (int, float) for a in x):
        return complex(x[0], x[1])
    raise ValueError("bad tag")


def _limit(which, value):
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass


def _enter_namespaces():
    """Judge: new user/pid/net/ipc/uts/cgroup namespaces, mapped to our own uid."""
    uid, gid = os.geteuid(), os.getegid()
    if _libc.unshare(NEWUSER | NEWPID | NEWNET | NEWIPC | NEWUTS | NEWCGROUP) != 0:
        raise _sys_err("unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", "0 %d 1" % uid), ("gid_map", "0 %d 1" % gid)):
        with open("/proc/self/" + name, "w") as f:
            f.write(text)


def _mount(src, dst, fstype, flags, data=None):
    b = lambda s: None if s is None else s.encode()
    if _libc.mount(b(src), b(dst), b(fstype), flags, b(data)) != 0:
        raise _sys_err("mount %s" % dst)


def _locked_flags(path):
    st = os.statvfs(path).f_flag
    out = 0
    for st_bit, ms_bit in ((2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, 1024),
                           (2048, 2048), (4096, 1 << 21)):
        if st & st_bit:
            out |= ms_bit
    return out


def _build_root(spec):
    """Candidate: private mount ns, tmpfs root, read-only system binds, pivot_root."""
    import platform
    root = spec["root"]
    if _libc.unshare(NEWNS) != 0:
        raise _sys_err("unshare mount")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dk,mode=0755" % spec["tmpfs_kb"])
    for d, mode in (("tmp", 0o1777), ("var/tmp", 0o1777), ("dev/shm", 0o1777), ("work", 0o755),
                    ("proc", 0o555), ("etc", 0o755)):
        os.makedirs(root + "/" + d, exist_ok=True)
        os.chmod(root + "/" + d, mode)
    bound = []
    sources = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"]
    sources += [p for p in sys.path if p] + ["/etc/ld.so.cache"]
    for src in sources:
        if not os.path.lexists(src):
            continue
        if os.path.dirname(src) == "/" and os.path.islink(src):
            os.symlink(os.readlink(src), root + src)
            continue
        src = os.path.realpath(src)
        if not os.path.exists(src) or any(src == b or src.startswith(b + "/") for b in bound):
            continue
        dst = root + src
        if os.path.isdir(src):
            os.makedirs(dst, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            open(dst, "a").close()
        _mount(src, dst, None, MS_BIND | MS_REC)
        _mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | _locked_flags(src))
        bound.append(src)
    for dev in ("null", "zero", "full", "random", "urandom"):
        open(root + "/dev/" + dev, "a").close()
        _mount("/dev/" + dev, root + "/dev/" + dev, None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, root + "/dev/" + name)
    with open(root + "/etc/passwd", "w") as f:
        f.write("root:x:0:0:sandbox:/work:/bin/sh\n")
    with open(root + "/etc/group", "w") as f:
        f.write("root:x:0:\n")
    try:  # a /proc of our own PID namespace (refused where /proc is partly masked)
        _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        for name in ("keys", "key-users"):  # names of keys our uid may view: masked
            if os.path.exists(root + "/proc/" + name):
                _mount(root + "/dev/null", root + "/proc/" + name, None, MS_BIND)
    except OSError:
        pass
    nr = PIVOT_ROOT.get(platform.machine())
    if nr is None:
        raise OSError("pivot_root: unknown machine %r" % platform.machine())
    os.chdir(root)
    if _libc.syscall(nr, b".", b".") != 0:
        raise _sys_err("pivot_root")
    if _libc.umount2(b".", 2) != 0:  # MNT_DETACH: the host's tree is gone from view
        raise _sys_err("umount old root")
    os.chdir("/work")


def _drop_capabilities():
    import ctypes
    for cap in range(64):
        if _libc.prctl(24, ctypes.c_ulong(cap), 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            break
    _prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    if _libc.capset(hdr, data) != 0:
        raise _sys_err("capset")


def _new_session_keyring():
    """Leave the evaluator's session keyring: join a fresh, empty, anonymous one."""
    import platform
    entry = SECCOMP.get(platform.machine())
    if _libc is not None and entry is not None:
        _libc.syscall(entry[1][5], 1, None)  # KEYCTL_JOIN_SESSION_KEYRING, NULL: a new one


def _seccomp():
    """A seccomp filter: the SECCOMP syscalls fail with EPERM, any foreign ABI with ENOSYS.
    Needs no_new_privs. False on a machine without a table (nothing installed)."""
    import ctypes, platform
    entry = SECCOMP.get(platform.machine())
    if entry is None or _libc is None:
        return False
    arch, nrs = entry
    allow, err = 0x7FFF0000, 0x00050000  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, RET|K
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, err | 38), (ld, 0, 0, 0)]
    if arch == 0xC000003E:  # the x32 ABI: same arch value, syscall numbers with bit 30 set
        prog += [(jge, 0, 1, 0x40000000), (ret, 0, 0, err | 38)]
    for nr in nrs:
        prog += [(jeq, 0, 1, nr), (ret, 0, 0, err | 1)]
    prog.append((ret, 0, 0, allow))

    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                    ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]

    insns = (Insn * len(prog))(*[Insn(*x) for x in prog])
    fprog = Prog(len(prog), insns)
    # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    if _libc.prctl(ctypes.c_ulong(22), ctypes.c_ulong(2), ctypes.byref(fprog), ctypes.c_ulong(0),
                   ctypes.c_ulong(0)) != 0:
        raise _sys_err("seccomp")
    return True


def _candidate(spec, resp_w, req_r):
    """The forked candidate: isolate, run the model's code, then answer calls."""
    sys.set_int_max_str_digits(0) if hasattr(sys, "set_int_max_str_digits") else None
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the judge
    _prctl(4, 1)  # PR_SET_DUMPABLE: a normal process (the judge is not)
    if spec["iso"]:
        try:
            _build_root(spec)
            with open("/work/program.py", "w", encoding="utf-8") as f:
                f.write(spec["code"])
            _drop_capabilities()
        except OSError as e:
            sys.stderr.write("sandbox: cannot isolate the candidate: %s\n" % e)
            sys.stderr.flush()
            os._exit(16)
        os.environ.update(HOME="/work", TMPDIR="/tmp")
    _prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (args 3-5 must be 0, or EINVAL)
    _prctl(1, signal.SIGKILL)
    _new_session_keyring()
    try:
        _seccomp()
    except OSError as e:
        if spec["iso"]:
            sys.stderr.write("sandbox: cannot isolate the candidate: %s\n" % e)
            sys.stderr.flush()
            os._exit(16)
    lim = spec["lim"]
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_MSGQUEUE, 0)  # POSIX message queues: memory no other limit counts
    _limit(resource.RLIMIT_MEMLOCK, 0)
    _limit(resource.RLIMIT_NOFILE, 256)
    _limit(resource.RLIMIT_CPU, lim["cpu"])
    _limit(resource.RLIMIT_FSIZE, lim["fsize"])
    _limit(resource.RLIMIT_NPROC, lim["nproc"])
    _limit(resource.RLIMIT_AS, lim["mem"])
    blocked = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
               "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"}

    def hook(event, args):
        if event in blocked:
            raise PermissionError("network access is disabled in the sandbox (" + event + ")")

    sys.addaudithook(hook)
    g = {"__name__": "__main__", "__builtins__": builtins}
    try:
        code = compile(spec["code"], "program.py", "exec")
    except (SyntaxError, ValueError):
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(12)
    def leave(rc, text=None):
        try:
            sys.stdout.flush()
            if text is None:
                import traceback
                traceback.print_exc()
            else:
                sys.stderr.write(text)
            sys.stderr.flush()
        except BaseException:
            pass
        os._exit(rc)

    try:
        exec(code, g)
    except MemoryError:
        leave(13, "MemoryError\n")
    except SystemExit as e:
        leave(14, "program called exit(%r) before its end\n" % (e.code,))
    except BaseException:
        leave(11)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        os._exit(11)
    _send(resp_w, ["ready"])
    if spec["mode"] == "program":
        os._exit(0)

    handles = []

    def keep(v):
        handles.append(v)
        t = type(v)
        return {"h": [len(handles) - 1, "%s.%s" % (getattr(t, "__module__", "?"), getattr(t, "__qualname__", "?"))]}

    def hook_in(o):
        if len(o) == 1 and "r" in o:
            name = o["r"]
            return g[name] if name in g else getattr(builtins, name)
        if len(o) == 1 and "h" in o:
            return handles[o["h"][0]]
        return _dec(o)

    while True:
        try:
            msg = _recv(req_r, hook=hook_in)
        except EOFError:
            os._exit(0)
        if msg[0] == "get":
            v = g.get(msg[1], _dec)
            if v is _dec:
                out = ["missing"]
            elif type(v) is type(sys):
                out = ["mod", v.__name__]
            elif callable(v):
                out = ["fn"]
            else:
                try:
                    out = ["val", _enc(v, keep)]
                except NotData as e:
                    out = ["bad", "%s is %s" % (msg[1], e)]
            _send(resp_w, out)
            continue
        try:
            r = g[msg[1]](*msg[2], **dict(msg[3]))
            out = ["ret", _enc(r, keep)]
        except NotData as e:
            out = ["bad", "%s() returned %s" % (msg[1], e)]
        except MemoryError:
            os._exit(13)
        except BaseException as e:
            try:
                out = ["raise", type(e).__name__, str(e)[:2000]]
            except BaseException:
                out = ["raise", "Exception", "?"]
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            _send(resp_w, out)
        except BaseException:
            os._exit(11)


class CandidateGone(BaseException):
    """The candidate died or broke the protocol; ends the tests."""


class NotPlainData(BaseException):
    """The candidate returned something other than plain builtin data."""


class CandidateError(Exception):
    """An exception the candidate raised whose type is not a builtin one."""


_CLEAN = {"pid": -1}


def _parent_died(*_):
    """SIGTERM, our PR_SET_PDEATHSIG: the evaluator died (e.g. kill -9) and cannot clean up.
    Kill the candidate and all it started, remove the run's directory, leave."""
    pid, spec = _CLEAN["pid"], _CLEAN.get("spec")
    if pid > 0:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)  # a PID-namespace init is reaped after all its processes
        except OSError:
            pass
    if spec is not None and not spec["iso"]:
        try:  # unisolated: the candidate's children are in our process group (or our uid)
            os.kill(-1, signal.SIGKILL) if spec["uid"] >= 0 else os.killpg(0, signal.SIGKILL)
        except OSError:
            pass
    if spec is not None:
        import shutil
        root = spec["root"]
        for top, dirs, _ in os.walk(root):  # (a candidate may leave mode-000 directories)
            for d in dirs:
                if not os.path.islink(os.path.join(top, d)):
                    try:
                        os.chmod(os.path.join(top, d), 0o700)
                    except OSError:
                        pass
        shutil.rmtree(root, ignore_errors=True)
    os._exit(0)


def _judge():
    global _libc
    spec_fd, verdict_fd = int(sys.argv[1]), int(sys.argv[2])
    signal.signal(signal.SIGTERM, _parent_died)
    spec = _recv(spec_fd)
    _CLEAN["spec"] = spec
    sys.set_int_max_str_digits(0) if hasattr(sys, "set_int_max_str_digits") else None
    try:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
    except Exception:
        _libc = None
    _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: _parent_died cleans up if the evaluator dies
    if os.getppid() != spec["parent"]:
        _parent_died()  # it died before we asked
    _new_session_keyring()  # the evaluator's keys stay behind (the candidate blocks keyctl too)
    if not spec["iso"] and spec["uid"] < 0:
        # Unisolated, same uid as the evaluator: undumpable before the nonce exists here, so
        # the candidate cannot read our memory or open our fds through /proc. (The evaluator
        # sends the nonce only once /proc shows this.)
        _prctl(4, 0)
    if spec["uid"] >= 0:
        os.setgroups([])
        os.setgid(spec["uid"])
        os.setuid(spec["uid"])
        _prctl(4, 1)  # the uid change made us non-dumpable: we could not write our uid_map
    _limit(resource.RLIMIT_CORE, 0)
    setup_error = None
    if spec["iso"]:
        try:
            if _libc is None:
                raise OSError("ctypes is unavailable")
            _enter_namespaces()
        except OSError as e:
            setup_error = "cannot create namespaces: %s" % e
    _prctl(1, signal.SIGTERM)  # again: a uid change clears it
    if os.getppid() != spec["parent"]:
        _parent_died()
    _prctl(4, 0)  # PR_SET_DUMPABLE=0: same-uid processes cannot ptrace us or open our fds
    _limit(resource.RLIMIT_AS, spec["lim"]["mem"] + (256 << 20))
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    pid = -1
    if setup_error is None:
        pid = os.fork()
        if pid == 0:
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                lo, hi = min(req_r, resp_w), max(req_r, resp_w)
                os.closerange(3, lo)
                for fd in range(lo + 1, hi):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                os.closerange(hi + 1, 1 << 16)
                _candidate(spec, resp_w, req_r)
            finally:
                os._exit(15)
    _CLEAN["pid"] = pid
    os.close(req_r)
    os.close(resp_w)
    side = _recv(spec_fd)  # the tests: read only now, after the fork
    os.close(spec_fd)
    nonce = side["nonce"]
    if pid > 0:  # the evaluator waits for it (and so for its whole PID namespace) to end
        _send(verdict_fd, {"n": nonce, "pid": pid})

    def verdict(status, detail=""):
        if pid > 0:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
        try:
            _send(verdict_fd, {"n": nonce, "status": status, "detail": detail[-16000:]})
        finally:
            os._exit(0)

    if setup_error is not None:
        verdict("error", setup_error)

    def gone_status():
        os.close(req_w)
        try:
            _, st = os.waitpid(pid, 0)
        except OSError:
            return "failed", "the candidate process vanished"
        if os.WIFSIGNALED(st):
            sig = os.WTERMSIG(st)
            if sig == signal.SIGXCPU:
                return "timeout", "CPU time limit"
            if sig in (signal.SIGKILL, signal.SIGSEGV):
                return "memory", "killed by signal %d (memory exhaustion)" % sig
            return "failed", "killed by signal %d" % sig
        rc = os.WEXITSTATUS(st)
        why = {12: ("error", "syntax error"), 13: ("memory", "MemoryError"),
               14: ("failed", "exit() before the end"), 16: ("error", "isolation failed"),
               11: ("failed", "uncaught exception")}
        return why.get(rc, ("failed", "exit status %d" % rc))

    def expect_ready():
        try:
            msg = _recv(resp_r, hook=_dec)
            return type(msg) is list and msg == ["ready"]
        except Exception:
            return False

    if not expect_ready():
        verdict(*gone_status())
    if side["mode"] == "program":
        verdict("passed")

    problems = _PROBLEMS

    def rpc(msg):
        try:
            _send(req_w, msg)
            reply = _recv(resp_r, hook=_dec)
        except (EOFError, OSError):
            problems.append("gone")
            raise CandidateGone("the candidate process died")
        except Exception as e:
            problems.append("protocol")
            raise CandidateGone("unreadable reply from the candidate: %s" % type(e).__name__)
        if type(reply) is not list or not reply or type(reply[0]) is not str:
            problems.append("protocol")
            raise CandidateGone("malformed reply from the candidate")
        return reply

    ns = {"__name__": "__main__"}

    def ref(v):
        if type(v) is Handle:
            return {"h": [v.n, v.what]}
        for k, x in ns.items():
            if x is v and not k.startswith("__"):
                return {"r": k}
        for k, x in builtins.__dict__.items():
            if x is v and not k.startswith("_"):
                return {"r": k}
        return None

    class Remote:
        __slots__ = ("name",)

        def __init__(self, name):
            self.name = name

        def __repr__(self):
            return "<candidate function %s>" % self.name

        def __call__(self, *args, **kwargs):
            try:
                msg = ["call", self.name, [_enc(a, ref) for a in args],
                       [[k, _enc(v, ref)] for k, v in kwargs.items()]]
            except NotData as e:
                raise TypeError("the tests pass %s to %s(): not sendable to the sandbox" % (e, self.name))
            reply = rpc(msg)
            kind = reply[0]
            if kind == "ret" and len(reply) == 2:
                return reply[1]
            if kind == "raise" and len(reply) == 3 and all(type(x) is str for x in reply[1:]):
                cls = getattr(builtins, reply[1], None)
                if isinstance(cls, type) and issubclass(cls, Exception):
                    try:
                        exc = cls(reply[2][:2000])
                    except Exception:
                        exc = CandidateError("%s: %s" % (reply[1], reply[2][:2000]))
                else:
                    exc = CandidateError("%s: %s" % (reply[1][:200], reply[2][:2000]))
                raise exc
            if kind == "bad" and len(reply) == 2 and type(reply[1]) is str:
                problems.append("bad")
                raise NotPlainData("%s; only plain data (%s) counts as an answer" % (reply[1][:500], PLAIN))
            problems.append("protocol")
            raise CandidateGone("malformed reply from the candidate")

    class Names(dict):
        """Builtins of the tests; a name they use that nothing defines is the candidate's."""

        def __missing__(self, name):
            reply = rpc(["get", name])
            if reply[0] == "fn":
                v = Remote(name)
            elif reply[0] == "mod" and len(reply) == 2 and reply[1] in _STDLIB:
                v = __import__(reply[1])  # a stdlib module the answer imported (e.g. sys)
            elif reply[0] == "val" and len(reply) == 2:
                v = reply[1]
            elif reply[0] == "bad":
                problems.append("bad")
                raise NotPlainData(str(reply[1])[:500] + "; only plain data (%s) is accepted" % PLAIN)
            else:
                raise KeyError(name)
            self[name] = v
            return v

    ns["__builtins__"] = Names(builtins.__dict__)
    try:
        exec(compile(side["prelude"], "<task prelude>", "exec"), ns)
        for name in side["names"]:
            ns[name] = Remote(name)
        exec(compile(side["tests"], "<tests>", "exec"), ns)
    except CandidateGone as e:
        status, why = gone_status()
        verdict(status if status != "passed" else "failed", "%s (%s)" % (e, why))
    except BaseException as e:
        import traceback
        verdict("memory" if isinstance(e, MemoryError) else "failed",
                "".join(traceback.format_exception(type(e), e, e.__traceback__)))
    if problems:
        verdict("failed", "the tests swallowed a sandbox violation: %s" % ", ".join(problems))
    verdict("passed")


_judge()
'''
)


class SandboxError(RuntimeError):
    """The sandbox itself could not run (no usable interpreter, no isolation, cannot spawn)."""


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
    drops_privileges: bool  # root: judge and candidate run under a fresh throw-away uid
    network_namespace: bool  # kept for callers of the old API: same as ``isolated``
    isolated: bool = False  # user/pid/net/ipc/mount namespaces + pivot_root work
    why_not: str = ""  # when not isolated: what failed


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
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            pids.append(int(name))
    return pids


def _sweep(uid: int, pgid: int) -> None:
    """Kill the judge's process group and anything else the run's uid still owns."""
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


def _read_capped(f: IO[bytes], keep_tail: bool) -> str:
    try:
        size = os.fstat(f.fileno()).st_size
        f.seek(size - _OUTPUT_KEEP if keep_tail and size > _OUTPUT_KEEP else 0)
        data = f.read(_OUTPUT_KEEP)
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


_undumpable = False


def _make_undumpable() -> None:
    """PR_SET_DUMPABLE=0 for this (evaluator) process, for the rest of its life: a process
    of our uid can then neither read our memory or environment through /proc nor open our
    pipes there (nor ptrace us). Side effects: no core dumps, debuggers cannot attach."""
    global _undumpable
    if _undumpable:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if (
        libc.prctl(
            ctypes.c_ulong(4),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
        != 0
    ):
        raise SandboxError(
            "cannot make the evaluator undumpable (prctl PR_SET_DUMPABLE failed), so an "
            "unisolated candidate could read the verdict's nonce from it; refusing to run"
        )
    _undumpable = True


def _write_when_undumpable(
    fd: int, first: bytes, second: bytes, proc: subprocess.Popen, limit_s: float
) -> None:
    """Send the judge its spec, and its nonce and tests only once /proc/<judge>/fd is no
    longer ours (the judge made itself undumpable): until then they could be read there."""
    try:
        view = memoryview(first)
        while view:
            view = view[os.write(fd, view) :]
        deadline = time.monotonic() + limit_s
        me = os.getuid()
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if os.stat(f"/proc/{proc.pid}/fd").st_uid != me:
                    view = memoryview(second)
                    while view:
                        view = view[os.write(fd, view) :]
                    return
            except OSError:
                return
            time.sleep(0.001)
    except OSError:
        pass
    finally:
        os.close(fd)


_swept = False


def _sweep_stale_dirs() -> None:
    """Remove run directories (``moagraph-sbx-<pid>-*``) of evaluators that are gone: one
    killed mid-run (kill -9) whose judge could not clean up (its SIGTERM cleanup covers the
    usual case). Once per process."""
    global _swept
    if _swept:
        return
    _swept = True
    tmp = Path(tempfile.gettempdir())
    try:
        entries = list(tmp.iterdir())
    except OSError:
        return
    for d in entries:
        parts = d.name.split("-")
        if len(parts) < 4 or parts[:2] != ["moagraph", "sbx"] or not parts[2].isdigit():
            continue
        pid = int(parts[2])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # alive (or another user's live process)
        except PermissionError:
            continue
        except ProcessLookupError:
            pass
        except OSError:
            continue
        _rmtree_forced(d)


def _rmtree_forced(path: Path) -> None:
    """rmtree that also enters directories a candidate made unreadable (mode 000); never
    follows a symlink (chmod would change its target)."""
    try:
        if not path.is_symlink():
            os.chmod(path, 0o700)
    except OSError:
        pass
    for top, dirs, _ in os.walk(path):
        for d in dirs:
            p = os.path.join(top, d)
            try:
                if not os.path.islink(p):
                    os.chmod(p, 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


def _frame(obj: object) -> bytes:
    data = _dumps(obj)
    return len(data).to_bytes(4, "big") + data


def _verdicts(data: bytes, nonce: str) -> tuple[dict | None, int]:
    """The judge's verdict and the candidate's pid (frames carrying our nonce)."""
    verdict, pid = None, -1
    while len(data) >= 4:
        n = int.from_bytes(data[:4], "big")
        body, data = data[4 : 4 + n], data[4 + n :]
        try:
            v = _loads(body)
        except (ValueError, RecursionError):
            break
        if not isinstance(v, dict) or v.get("n") != nonce:
            break
        if isinstance(v.get("pid"), int):
            pid = v["pid"]
        elif v.get("status") in _STATUSES and verdict is None:
            verdict = v
    return verdict, pid


def _await_gone(pid: int) -> None:
    """Kill ``pid`` and wait until it is gone or a zombie (for a PID-namespace init
    that means every process it started is gone too)."""
    for _ in range(2000):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in (b"Z", b"X"):
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        time.sleep(0.002)


def _unsafe_allowed(allow_unisolated: bool | None) -> bool:
    if allow_unisolated is not None:
        return allow_unisolated
    return os.environ.get(UNSAFE_ENV, "").strip().lower() in ("1", "true", "yes")


_warned = False


def _warn_unisolated(why: str) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    root = os.geteuid() == 0
    warnings.warn(
        "moagraph code sandbox is running WITHOUT isolation ("
        + why
        + "): model-written code can read every file "
        + ("a throw-away uid can (world-readable ones)" if root else "your user can")
        + ", reach the network, see (and "
        + ("" if root else "as your user, ")
        + "signal) other processes, and leave files in /tmp or /dev/shm. What still holds: "
        "the verdict (judge/candidate split, a per-run nonce"
        + (
            ", a throw-away uid"
            if root
            else "; this process and the judge are made undumpable so the candidate cannot "
            "read their memory, environment or pipes through /proc (so no core dumps or "
            "debugger for this process)"
        )
        + "), the seccomp filter (no memfd, SysV shm or keyrings), per-process rlimits (no "
        "total memory cap). Unset " + UNSAFE_ENV + " to refuse instead.",
        RuntimeWarning,
        stacklevel=3,
    )


def _execute(
    python: str,
    iso: bool,
    drop: bool,
    mode: str,
    code: str,
    judge_side: dict,
    timeout_s: float,
    memory_mb: int,
    max_file_mb: int,
    max_procs: int,
) -> SandboxResult:
    uid = _UID_BASE + secrets.randbelow(_UID_SPAN - 1) if drop else -1
    # Unisolated under our own uid, the candidate could read our memory (the nonce) and open
    # our pipes through /proc: we and the judge are made undumpable, and the judge gets the
    # nonce only once /proc shows it undumpable (before that it could be read there).
    guarded = not iso and uid < 0 and os.geteuid() != 0
    if guarded:
        _make_undumpable()
    nproc = max_procs + 1  # + the judge
    if uid < 0 and os.geteuid() != 0:
        # RLIMIT_NPROC counts every process of our user, not just this run's (+ ourselves,
        # whom the count misses once we are undumpable: our /proc entry is root's then).
        nproc += len(_uid_processes(os.getuid())) + 1
    _sweep_stale_dirs()
    # The pid in the name lets a later run remove it if we are killed before we can.
    work = Path(tempfile.mkdtemp(prefix=f"moagraph-sbx-{os.getpid()}-"))
    nonce = secrets.token_hex(16)
    spec = {
        "iso": iso,
        "uid": uid,
        "parent": os.getpid(),
        "root": str(work),
        "mode": mode,
        "code": code,
        "tmpfs_kb": max(16 << 10, 4 * (max_file_mb << 10)),
        "lim": {
            "mem": memory_mb << 20,
            "fsize": max_file_mb << 20,
            "nproc": nproc,
            "cpu": int(timeout_s) + 2,
        },
    }
    first, second = _frame(spec), _frame({"nonce": nonce, "mode": mode, **judge_side})
    payload = first + second
    spec_r = spec_w = verdict_r = verdict_w = -1
    proc = None
    timed_out = False
    try:
        if not iso:
            (work / "program.py").write_text(code, encoding="utf-8")
        if uid >= 0:
            os.chown(work, uid, uid)
            if not iso:
                os.chown(work / "program.py", uid, uid)
        os.chmod(work, 0o700)
        spec_r, spec_w = os.pipe()
        verdict_r, verdict_w = os.pipe()
        os.set_blocking(verdict_r, False)
        env = {
            "HOME": str(work),
            "TMPDIR": str(work),
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
        }
        start = time.perf_counter()
        # Unnamed files: nothing of the output is left behind, even if we are killed.
        with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
            try:
                proc = subprocess.Popen(
                    [python, "-I", "-S", "-c", _RUNNER, str(spec_r), str(verdict_w)],
                    cwd=work,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out_f,
                    stderr=err_f,
                    pass_fds=(spec_r, verdict_w),
                    start_new_session=True,
                )
            except OSError as e:
                raise SandboxError(f"cannot start the code sandbox: {e}") from e
            os.close(spec_r)
            os.close(verdict_w)
            spec_r = verdict_w = -1
            writer = None
            if guarded:
                writer = threading.Thread(
                    target=_write_when_undumpable,
                    args=(spec_w, first, second, proc, timeout_s),
                    daemon=True,
                )
                writer.start()
            elif len(payload) <= _pipe_capacity(spec_w, len(payload)):
                _write_all(spec_w, payload)  # fits: no thread needed
            else:
                writer = threading.Thread(target=_write_all, args=(spec_w, payload), daemon=True)
                writer.start()
            spec_w = -1  # _write_all closes it
            timed_out = not _wait_exit(proc, timeout_s)
            _sweep(uid if not iso else -1, proc.pid)
            rc = proc.wait()
            if writer is not None:
                writer.join(timeout=1)
            duration = time.perf_counter() - start
            data = b""
            while True:
                try:
                    chunk = os.read(verdict_r, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                data += chunk
            v, cand_pid = _verdicts(data, nonce)
            if cand_pid > 0 and (timed_out or v is None):
                _await_gone(cand_pid)  # the judge was killed: its candidate dies with it
            stdout = _read_capped(out_f, keep_tail=False)
            stderr = _read_capped(err_f, keep_tail=True)
    finally:
        for fd in (spec_r, spec_w, verdict_r, verdict_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        _rmtree_forced(work)
    if timed_out:
        status: SandboxStatus = "timeout"
        detail = f"wall-clock limit of {timeout_s:g}s"
    elif v is None:
        status, detail = "failed", f"the sandbox ended without a verdict (rc={rc})"
    else:
        status, detail = v["status"], str(v.get("detail", ""))
    if status == "failed" and "MemoryError" in stderr[-2000:]:
        status = "memory"
    if detail and status != "passed":
        stderr = (
            stderr
            + ("\n" if stderr and not stderr.endswith("\n") else "")
            + f"[sandbox: {status}] {detail}"
        )
    return SandboxResult(status == "passed", status, stdout, stderr, duration, rc)


def _wait_exit(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Whether ``proc`` ended within ``timeout_s``; woken the moment it does (a
    pidfd), where ``Popen.wait(timeout)`` polls with sleeps of up to 50 ms."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return proc.poll() is not None
            if poller.poll(left * 1000):
                proc.wait()
                return True
    finally:
        os.close(pidfd)


def _pipe_capacity(fd: int, want: int) -> int:
    try:
        import fcntl

        return fcntl.fcntl(fd, 1031, min(max(want, 1 << 16), 1 << 20))  # F_SETPIPE_SZ
    except OSError:
        return 1 << 16


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass
    finally:
        os.close(fd)


_PROBE = "import math, collections, re, itertools, heapq\n"


@functools.lru_cache(maxsize=1)
def sandbox_capabilities() -> SandboxCapabilities:
    """Pick the interpreter and isolation once per process (probing costs ~50 ms).

    As root we need an interpreter the dropped uid can execute (a pyenv Python
    under /root is not); we try this one, then system Pythons.
    """
    candidates: list[str] = []
    for c in (
        getattr(sys, "_base_executable", ""),
        sys.executable,
        "/usr/bin/python3",
        "/usr/local/bin/python3",
        shutil.which("python3") or "",
    ):
        if c and Path(c).exists():
            real = str(Path(c).resolve())
            if real not in candidates:
                candidates.append(real)
    if not candidates:
        raise SandboxError("no Python interpreter found for the code sandbox")
    root = os.geteuid() == 0
    python, drops = candidates[0], False
    probe = functools.partial(
        _execute,
        mode="program",
        code=_PROBE,
        judge_side={"prelude": "", "tests": "", "names": []},
        timeout_s=20,
        memory_mb=512,
        max_file_mb=1,
        max_procs=16,
    )
    if root:
        for c in candidates:
            if _world_executable(Path(c)) and probe(c, False, True).passed:
                python, drops = c, True
                break
    r = probe(python, True, drops)
    why = "" if r.passed else (r.stderr.strip().splitlines() or ["unknown failure"])[-1]
    return SandboxCapabilities(
        python=python,
        drops_privileges=drops,
        network_namespace=r.passed,
        isolated=r.passed,
        why_not=why,
    )


def _checked(
    timeout_s: float, memory_mb: int, allow_unisolated: bool | None
) -> SandboxCapabilities:
    if timeout_s <= 0:
        raise ValueError(
            f"timeout_s must be > 0 (got {timeout_s}); pass a positive number of seconds"
        )
    if memory_mb < 32:
        raise ValueError(f"memory_mb must be >= 32 (got {memory_mb}); Python itself needs ~20 MB")
    caps = sandbox_capabilities()
    if not caps.isolated:
        if not _unsafe_allowed(allow_unisolated):
            raise SandboxError(
                f"refusing to run untrusted code: this machine does not allow the sandbox's "
                f"namespaces ({caps.why_not}). Without them model code could read your files and "
                f"API keys, use the network and leave processes behind. Enable unprivileged user "
                f"namespaces (sysctl kernel.unprivileged_userns_clone=1 / "
                f"user.max_user_namespaces > 0, or a container that allows unshare), or accept "
                f"the risk with {UNSAFE_ENV}=1 (or allow_unisolated=True)."
            )
        _warn_unisolated(caps.why_not)
    return caps


def run_code(
    code: str,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    *,
    max_file_mb: int = 16,
    max_procs: int = 32,
    allow_unisolated: bool | None = None,
) -> SandboxResult:
    """Run ``code`` as a Python program in the sandbox and say how it ended.

    ``passed`` means the program ran to its last line (an exception, ``exit()``
    or ``os._exit`` before the end are failures). This is the program's own
    word: do not grade untrusted code by appending tests to it (the code can
    stop the tests from running); use :func:`run_tests`. Blocking; use
    :func:`arun_code` from async code.
    """
    caps = _checked(timeout_s, memory_mb, allow_unisolated)
    side = {"prelude": "", "tests": "", "names": []}
    return _execute(
        caps.python,
        caps.isolated,
        caps.drops_privileges,
        "program",
        code,
        side,
        timeout_s,
        memory_mb,
        max_file_mb,
        max_procs,
    )


def run_tests(
    code: str,
    tests: str,
    *,
    prelude: str = "",
    names: Sequence[str] = (),
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    max_file_mb: int = 16,
    max_procs: int = 32,
    allow_unisolated: bool | None = None,
) -> SandboxResult:
    """Grade untrusted ``code`` with trusted ``tests`` that the code never sees.

    ``code`` runs in the candidate process. ``prelude`` (trusted task code, e.g.
    the HumanEval prompt with its helpers, or MBPP's setup code) and then
    ``tests`` run in the judge; there each of ``names`` (and any other name the
    tests use that neither they nor the prelude define) calls into the
    candidate, and only plain builtin data comes back. Passed means the tests
    ran to their end.
    """
    caps = _checked(timeout_s, memory_mb, allow_unisolated)
    side = {"prelude": prelude, "tests": tests, "names": list(names)}
    return _execute(
        caps.python,
        caps.isolated,
        caps.drops_privileges,
        "tests",
        code,
        side,
        timeout_s,
        memory_mb,
        max_file_mb,
        max_procs,
    )


async def arun_code(
    code: str, timeout_s: float = 10.0, memory_mb: int = 512, **kwargs: Any
) -> SandboxResult:
    """:func:`run_code` in a worker thread, so an event loop keeps serving."""
    return await asyncio.to_thread(run_code, code, timeout_s, memory_mb, **kwargs)


async def arun_tests(code: str, tests: str, **kwargs: object) -> SandboxResult:
    """:func:`run_tests` in a worker thread."""
    return await asyncio.to_thread(functools.partial(run_tests, code, tests, **kwargs))  # type: ignore[arg-type]
