"""Open-ended chat on AlpacaEval instructions.

There is no reference answer: a score comes from a judge, or from a recorded
label (the AlpacaEval 2.0 judge's win probability in the replay pool). So
``gradable`` is False and :meth:`ChatTask.grade` refuses without a score.
"""

from __future__ import annotations

from typing import Any, ClassVar

from moagraph.tasks._common import FileTask, in_train_fraction, iter_bundled, read_jsonl
from moagraph.tasks.base import Example, NotGradableError


class ChatTask(FileTask):
    """AlpacaEval instructions (600 in the shared data).

    ids are AlpacaEval's own (``"17"``), the query ids the AlpacaEval replay
    pool is keyed by. (A, B) = (40, 310): mean instruction length 37.3 Gemma-3
    tokens (+ chat framing) and mean output length of the 21 recorded models
    (309 tokens over 3,000 outputs). ``train``/``test``: stable 20/80 hash split.
    """

    name: ClassVar[str] = "chat"
    kind: ClassVar = "chat"
    avg_input_tokens: ClassVar[int] = 40
    avg_output_tokens: ClassVar[int] = 310
    gradable: ClassVar[bool] = False
    splits: tuple[str, ...] = ("sample", "train", "test", "all")

    def _load_split(self, split: str) -> list[Example]:
        if split == "sample":
            rows = list(iter_bundled("chat_sample.jsonl"))
        else:
            path = self.data_file(
                "alpaca_eval", "instructions.jsonl.gz", what="AlpacaEval instructions"
            )
            rows = read_jsonl(path)
            if split != "all":
                rows = [
                    r for r in rows if in_train_fraction(f"alpaca/{r['id']}") == (split == "train")
                ]
        return [
            Example(id=str(r["id"]), question=r["instruction"], meta={"dataset": r.get("dataset")})
            for r in rows
        ]

    def extract(self, text: str) -> str | None:
        text = (text or "").strip()
        return text or None

    def equivalent(self, a: Any, b: Any) -> bool:
        return (
            a is not None and b is not None and " ".join(str(a).split()) == " ".join(str(b).split())
        )

    def grade(self, text: str, example: Example, score: float | None = None) -> float:
        """``score`` (a judge's or a recorded win probability in [0, 1]) is required."""
        if score is None:
            raise NotGradableError(
                f"chat answer to {example.id!r} cannot be graded without a judge: pass score= "
                "(e.g. a recorded AlpacaEval label), or use a replay pool that records `score`"
            )
        if not 0.0 <= float(score) <= 1.0:
            raise NotGradableError(f"score must be in [0, 1] (got {score}); pass a win probability")
        return float(score)
