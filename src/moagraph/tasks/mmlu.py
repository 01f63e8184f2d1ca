"""MMLU: four-option multiple choice over 57 subjects.

The shared data has the test and dev CSVs (``shared/data/mmlu``); a bundled
``sample`` split (2 test questions per subject) needs no data dir. Layouts read:

* the CSV release: ``<data_dir>/mmlu/<split>/<subject>_<split>.csv`` with rows
  ``question,A,B,C,D,answer`` (no header), or the cais/mmlu export with a
  ``question,choice0..choice3,answer`` header and 0-based answer indices;
* JSONL: ``<data_dir>/mmlu/<split>.jsonl`` with ``{question, choices, answer}``
  (``answer`` a letter or a 0-based index; optional ``subject``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, ClassVar

from moagraph.tasks._common import DATA_HINT, FileTask, check_row, iter_bundled, read_jsonl_numbered
from moagraph.tasks.base import Example, TaskDataError, TaskError
from moagraph.tasks.grading.choice import choice_equivalent, extract_choice

LETTERS = "ABCD"


class MMLUTask(FileTask):
    """MMLU; (A, B) = (213, 215) from the Agent-REINFORCE pilot study."""

    name: ClassVar[str] = "mmlu"
    kind: ClassVar = "choice"
    avg_input_tokens: ClassVar[int] = 213
    avg_output_tokens: ClassVar[int] = 215
    splits: tuple[str, ...] = ("sample", "train", "dev", "val", "test")

    def _load_split(self, split: str) -> list[Example]:
        if split == "sample":  # bundled: 2 test questions of each of the 57 subjects
            return [
                _example(r["id"], r["question"], r["choices"], r["answer"], r["subject"])
                for r in iter_bundled("mmlu_test_sample.jsonl")
            ]
        base = self.data_dir
        root = base / "mmlu" if base is not None else None
        if root is not None and (root / f"{split}.jsonl").exists():
            path = root / f"{split}.jsonl"
            return [
                self._from_json(split, i, r, f"{path}:{line}")
                for i, (line, r) in enumerate(read_jsonl_numbered(path))
            ]
        if root is not None and (root / split).is_dir():
            files = sorted((root / split).glob("*.csv"))
            if files:
                return [ex for f in files for ex in self._from_csv(split, f)]
        where = f"{root}" if root is not None else "<data_dir>/mmlu (no data dir found)"
        raise TaskDataError(
            f"task 'mmlu': no {split!r} data in {where}; put the MMLU CSV files at "
            f"<data_dir>/mmlu/{split}/<subject>_{split}.csv (rows: question,A,B,C,D,answer) "
            f"or a JSONL at <data_dir>/mmlu/{split}.jsonl with {{question, choices, answer}}; "
            f"{DATA_HINT}"
        )

    @staticmethod
    def _from_csv(split: str, path: Path) -> list[Example]:
        subject = path.stem.removesuffix(f"_{split}")
        out = []
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        # The cais/mmlu export has a header (question,choice0..choice3,answer) and
        # 0-based answer indices; the original release has neither.
        if rows and [c.strip().lower() for c in rows[0][:1]] == ["question"]:
            rows = rows[1:]
        for i, row in enumerate(rows):
            if len(row) == 6 and row[5].strip() in ("0", "1", "2", "3"):
                row = [*row[:5], LETTERS[int(row[5].strip())]]
            if len(row) != 6:
                raise TaskError(
                    f"{path}: row {i + 1} has {len(row)} columns; MMLU CSV rows are "
                    "question,A,B,C,D,answer"
                )
            q, *choices, ans = row
            ans = ans.strip().upper()
            if ans not in LETTERS:
                raise TaskError(f"{path}: row {i + 1} answer {ans!r} is not one of A-D")
            out.append(_example(f"mmlu/{subject}/{split}/{i}", q, choices, ans, subject))
        return out

    @staticmethod
    def _from_json(split: str, i: int, r: dict[str, Any], where: str = "") -> Example:
        where = where or f"MMLU JSONL record {i}"
        check_row(r, {"question": str, "choices": list, "answer": (int, str)}, where, "MMLU")
        q, choices, ans = r["question"], list(r["choices"]), r["answer"]
        if isinstance(ans, int):
            if not 0 <= ans < len(choices):
                raise TaskError(
                    f"{where}: MMLU answer index {ans} is out of range for {len(choices)} "
                    "choices; fix or remove that line"
                )
            ans = LETTERS[ans]
        ans = str(ans).strip().upper()
        if ans not in LETTERS[: len(choices)]:
            raise TaskError(
                f"{where}: MMLU answer {ans!r} does not name one of the choices; "
                "fix or remove that line"
            )
        subject = str(r.get("subject", "all"))
        return _example(str(r.get("id", f"mmlu/{subject}/{split}/{i}")), q, choices, ans, subject)

    def format_question(self, example: Example) -> str:
        opts = "\n".join(
            f"{L}. {c}" for L, c in zip(LETTERS, example.meta["choices"], strict=False)
        )
        subject = example.meta.get("subject", "").replace("_", " ")
        about = f" about {subject}" if subject and subject != "all" else ""
        return (
            f"The following is a multiple choice question{about}. Think it through briefly, "
            f'then finish with "The answer is (X)" where X is the letter.\n\n'
            f"{example.question}\n{opts}"
        )

    def extract(self, text: str) -> str | None:
        return extract_choice(text)

    def equivalent(self, a: Any, b: Any) -> bool:
        return choice_equivalent(a, b)

    def grade(self, text: str, example: Example) -> float:
        return (
            1.0
            if choice_equivalent(extract_choice(text, example.meta["choices"]), example.reference)
            else 0.0
        )


def _example(eid: str, q: str, choices: list[str], ans: str, subject: str) -> Example:
    return Example(
        id=eid, question=q, reference=ans, meta={"choices": list(choices), "subject": subject}
    )
