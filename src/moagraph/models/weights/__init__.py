"""Model weights that install from the package registry, so no model hub is needed at run time.

Registry packages cap file sizes, so a GGUF ships as numbered raw chunks spread over
several packages. :class:`SplitGGUF` joins them once into the user cache, verifies the
published sha256, and afterwards answers from a small stamp file (size + mtime + hash),
so loading a 1 GB model does not re-hash it on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import import_module
from importlib.resources import files
from pathlib import Path
from typing import Any

from moagraph.errors import DataError

__all__ = ["SplitGGUF", "WeightsError", "cache_dir"]

_BLOCK = 8 << 20


class WeightsError(DataError):
    """Chunk packages missing, or the assembled file does not match its published hash."""


def cache_dir() -> Path:
    """Where assembled models live: ``$MOAGRAPH_CACHE_DIR/models`` or ``~/.cache/moagraph/models``."""
    root = os.environ.get("MOAGRAPH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"), "moagraph"
    )
    return Path(root) / "models"


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF file published as raw chunks, one per registry package, joined in order."""

    file_name: str
    packages: tuple[str, ...]
    """Import names of the chunk packages, in order."""
    chunk_name: Callable[[int], str]
    """File name of chunk i (1-based) inside ``<package>/data/``."""
    size: int
    sha256: str
    install_hint: str

    def chunk_paths(self) -> list[Path]:
        paths, missing = [], []
        for i, pkg in enumerate(self.packages, 1):
            try:
                import_module(pkg)
            except ImportError:
                missing.append(pkg.replace("_", "-"))
                continue
            paths.append(Path(str(files(pkg).joinpath("data", self.chunk_name(i)))))
        if missing:
            raise WeightsError(
                f"{self.file_name}: {len(missing)} of {len(self.packages)} weight packages are not "
                f"installed ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); "
                f"{self.install_hint}"
            )
        return paths

    def path(self, directory: Path | None = None) -> Path:
        return (directory or cache_dir()) / self.file_name

    def _stamp(self, target: Path) -> Path:
        return target.with_name(target.name + ".verified.json")

    def is_verified(self, target: Path) -> bool:
        """True when ``target`` was verified and has not changed since (no re-hash)."""
        try:
            st, stamp = target.stat(), json.loads(self._stamp(target).read_text())
        except (OSError, ValueError):
            return False
        return stamp == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": self.sha256}

    def assemble(self, directory: Path | None = None, progress: bool = True) -> Path:
        """Join the chunks into the cache (once), verify size and sha256, return the path.

        Written to a temporary name and renamed, so a killed assembly never leaves a
        truncated model behind; concurrent callers each write their own temporary file.
        """
        target = self.path(directory)
        if self.is_verified(target):
            return target
        chunks = self.chunk_paths()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        bar = _progress(progress, f"assembling {self.file_name}", self.size)
        try:
            written = join_files(chunks, tmp, digest, bar)
            if written != self.size or digest.hexdigest() != self.sha256:
                raise WeightsError(
                    f"{self.file_name}: assembled {written:,} bytes with sha256 "
                    f"{digest.hexdigest()[:16]}..., expected {self.size:,} bytes and "
                    f"{self.sha256[:16]}...; reinstall the weight packages ({self.install_hint})"
                )
            tmp.replace(target)
        finally:
            bar(None)
            tmp.unlink(missing_ok=True)
        st = target.stat()
        self._stamp(target).write_text(
            json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": self.sha256})
        )
        return target


def join_files(
    parts: Iterable[str | Path], out_path: Path, digest: Any, bar: Callable[[int | None], None]
) -> int:
    """Concatenate ``parts`` into ``out_path`` in blocks, feeding ``digest`` (a hashlib
    object) and the progress ``bar``; returns the bytes written. One copy for every
    split-weights package, so each is verified the same way."""
    written = 0
    with open(out_path, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while block := f.read(_BLOCK):
                    out.write(block)
                    digest.update(block)
                    written += len(block)
                    bar(len(block))
    return written


def _progress(enabled: bool, label: str, total: int) -> Callable[[int | None], None]:
    """A rich progress bar fed with byte counts (None closes it); a no-op when disabled."""
    if not enabled:
        return lambda n: None
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    prog = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    prog.start()
    task = prog.add_task(label, total=total)

    def advance(n: int | None) -> None:
        if n is None:
            prog.stop()
        else:
            prog.advance(task, n)

    return advance
