"""Rebuild the bundled ground-truth pools from the shared data (reproducible).

    python -m moagraph.pools.data.build_bundled [--data-dir ../shared/data] [--out DIR] [--only NAME]

Writes ``zeroeval-gsm8k``, ``zeroeval-math`` and ``mmlu-pro`` next to this file
(or under ``--out``). Size policy, so the wheel stays a few MB per pool:

* ZeroEval: every question, every model, every label; the full output text
  only for open models of at most 10B (active) parameters (the proposers that
  hybrid graphs and fusers re-read); other models keep the 200 characters that
  end with their final ``"answer"`` field (``meta.text_truncated``), enough for
  votes; token counts always come from the full text.
* MMLU-Pro: every question, model and label (the texts are synthetic one-line
  answers anyway); ``queries.jsonl`` is gzipped (``queries.jsonl.gz``).

Run the same command on a data folder with more questions and the pools
grow with it; nothing here depends on the shipped question count.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

from moagraph.pools.ground_truth import import_mmlu_pro, import_zeroeval
from moagraph.tasks._common import shared_data_dir

HERE = Path(__file__).resolve().parent
FULL_TEXT_MAX_B = 10.0
KEEP_CHARS = 200


def _gzip_queries(out: Path) -> None:
    q = out / "queries.jsonl"
    with (
        open(q, "rb") as src,
        open(out / "queries.jsonl.gz", "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,
    ):
        shutil.copyfileobj(src, gz)
    q.unlink()


def build(data_dir: Path, out_root: Path, only: str | None = None) -> list[Path]:
    done = []
    jobs = {
        "zeroeval-gsm8k": lambda out: import_zeroeval(
            data_dir / "zeroeval" / "gsm",
            out,
            name="zeroeval-gsm8k",
            full_text_max_b=FULL_TEXT_MAX_B,
            keep_chars=KEEP_CHARS,
        ),
        "zeroeval-math": lambda out: import_zeroeval(
            data_dir / "zeroeval" / "math-l5",
            out,
            name="zeroeval-math",
            full_text_max_b=FULL_TEXT_MAX_B,
            keep_chars=KEEP_CHARS,
        ),
        "mmlu-pro": lambda out: import_mmlu_pro(data_dir / "mmlu_pro", out, name="mmlu-pro"),
    }
    for name, job in jobs.items():
        if only and name != only:
            continue
        out = out_root / name
        job(out)
        if name == "mmlu-pro":
            _gzip_queries(out)
        done.append(out)
    return done


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=None, help="shared/data folder")
    ap.add_argument("--out", type=Path, default=HERE, help="where the pool folders go")
    ap.add_argument("--only", default=None, help="zeroeval-gsm8k | zeroeval-math | mmlu-pro")
    a = ap.parse_args(argv)
    data = a.data_dir or shared_data_dir()
    if data is None:
        raise SystemExit("no shared/data found; pass --data-dir")
    for out in build(Path(data), a.out, a.only):
        size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
        print(f"wrote {out} ({size:.1f} MB)")


if __name__ == "__main__":
    main()
