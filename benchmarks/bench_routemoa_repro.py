"""RouteMoA reproduction check from the released per-item outputs (issue #22, item 10).

    python benchmarks/bench_routemoa_repro.py --repo PATH/TO/RouteMoA [--out FILE] [--show 3]

The RouteMoA repository (github.com/rongyan4/RouteMoA) ships, under
``emoa_large/eval/``, the large-pool outputs of MoA, RouteMoA and SMoA on 450
items (30 datasets x 15, in 5 categories): ``moa.json``, ``routemoa.json``,
``smoa.json`` (per item: response, released grade, latency, cost),
``benchmark_questions.json`` and ``summary_all.json``. Nothing of it is
bundled with moagraph: point ``--repo`` at a clone (or at its
``emoa_large/eval`` folder).

What it does:

* reads the three systems' items and checks them against the question file;
* re-grades every item that a moagraph grader covers: math answers with the
  GSM8K / MATH graders (``moagraph.tasks.grading.math_equiv``), lettered
  multiple choice with ``extract_choice``, and label tasks (yes/no, sentiment,
  NLI, topic) with ``extract_choice`` matching the option text. Free-form
  datasets (NER recall, extractive QA, headline ROUGE, grammar-correction F1,
  pronoun resolution, pattern completion) keep their released grade
  ("released grade only");
* aggregates like the paper (macro over datasets within a category, then over
  the 5 categories: ``global_avg_by_category`` in ``summary_all.json``, which
  is what the paper's 78.6 / 71.3 / 69.7, -89.8% cost and -63.6% latency are),
  with moagraph's grade replacing the released one where moagraph grades;
* 95% intervals: Wilson for accuracy over the re-graded items, paired
  bootstrap (``moagraph.search.compare.paired_bootstrap``, resampling items)
  for RouteMoA - MoA;
* lists every item where moagraph's grade and the released grade disagree, by
  kind, with examples.

Released grades: ``is_correct`` (0/1) where present; for the three MATH
datasets the released grade is a GPT-4o judge score 0-4 (``Score: N`` in
``parsed_answer``) divided by 4; for msra, lcsts and the two GEC sets the
files give only the dataset-level score (taken from the summary). For
disagreement counting a judge score counts as correct at >= 3 of 4. Replies
``Error Occur! response text:`` are calls that hit the 1000 s limit: the
release grades them 0 and leaves them (cost 0) out of its cost average; the
output reports them and the accuracy without them.

The choice graders get the reply's JSON ``"answer"`` field first (RouteMoA's
and SMoA's aggregators answer ``{"answer": "G", ...}``, which
``extract_choice`` alone does not read); a column shows the grade without it.
Write-up: docs/routemoa-reproduction.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SYSTEMS = ("moa", "routemoa", "smoa")
NAMES = {"moa": "MoA", "routemoa": "RouteMoA", "smoa": "SMoA"}
FILES = ("benchmark_questions.json", "moa.json", "routemoa.json", "smoa.json", "summary_all.json")
EVAL_SUBDIR = Path("emoa_large") / "eval"

# The paper's large-pool headline (Table 1; the macro over the 5 categories).
PAPER = {
    "acc": {"routemoa": 78.6, "moa": 71.3, "smoa": 69.7},
    "cost_rel": -89.8,  # RouteMoA vs MoA
    "latency_rel": -63.6,
}
JUDGE_CORRECT = 0.75  # judge score >= 3 of 4 counts as correct for disagreement listing

# --------------------------------------------------------------------------- graders

# label datasets: option texts (matched by extract_choice's option-text rule) and
# the released ground truth -> option index.
LABELS: dict[str, tuple[list[str], dict[str, int]]] = {
    "lcqmc": (["是", "否"], {"1": 0, "0": 1}),
    "ocnli": (["矛盾", "蕴含", "中立"], {"contradiction": 0, "entailment": 1, "neutral": 2}),
    "sst2": (["Negative", "Positive"], {"negative": 0, "positive": 1}),
    "cola": (["Yes", "No"], {"yes": 0, "no": 1}),
    "mrpc": (["yes", "no"], {"yes": 0, "no": 1}),
    "qqp": (["yes", "no"], {"yes": 0, "no": 1}),
    "sts_b": (["yes", "no"], {"yes": 0, "no": 1}),
    "qnli": (["yes", "no"], {"entailment": 0, "not_entailment": 1}),
    "ag_news": (
        ["World", "Sports", "Business", "Science and Technology"],
        {"world": 0, "sports": 1, "business": 2, "science and technology": 3},
    ),
}
# lettered multiple choice: the letters offered; reference = text before " || ".
LETTERED: dict[str, str] = {
    "chid_baidu": "ABCDEFG",
    "c3": "ABCD",
    "race": "ABCD",
    "story_cloze_test": "AB",
    "truthful_qa": "ABCDE",
    "nlpcc2017_task2": "ABCDEFGHIJKLMNOPQR",
    "cluewsc2020": "AB",  # options A.是 B.否; reference true/false
}
NUMERIC = {"bigmath", "gsm8k_test_100"}
MATH_JUDGED = {"geometry", "prealgebra", "precalculus"}
MATH_SHORT = {"GAOKAO-2023_Math_en"}
RELEASED_ONLY_WHY = {
    "msra": "NER recall (released: dataset-level only)",
    "webqa": "extractive QA (containment + QA-F1)",
    "cmrc": "extractive QA (containment + QA-F1)",
    "winograd_wsc": "free-text referent (containment)",
    "word_manipulation_v2": "pattern completion, mixed numbers/words (containment)",
    "lcsts": "headline ROUGE (released: dataset-level only)",
    "nlpcc2018_task2": "grammar-correction F1 (released: dataset-level only)",
    "conll2014": "grammar-correction F1 (released: dataset-level only)",
}

_SCORE_RE = re.compile(r"Score\s*[:：]\s*([0-4](?:\.\d+)?)")


def grader_of(dataset: str) -> str | None:
    """Name of the moagraph grader used for a dataset, or None (released grade only)."""
    if dataset in LABELS:
        return "choice (option text)"
    if dataset in LETTERED:
        return "choice (letter)"
    if dataset in NUMERIC:
        return "gsm8k (math_equiv, numeric)"
    if dataset in MATH_JUDGED:
        return "math (math_equiv vs boxed reference)"
    if dataset in MATH_SHORT:
        return "math (math_equiv) / choice"
    return None


_TASKS: dict[str, Any] = {}


def _task(name: str) -> Any:
    if name not in _TASKS:
        from moagraph.tasks.registry import get_task

        _TASKS[name] = get_task(name)
    return _TASKS[name]


def moagraph_grade(
    dataset: str,
    response: str,
    ground_truth: str,
    unwrap_json: bool = True,
    question: str = "",
) -> tuple[float | None, Any, Any]:
    """(score in {0, 1} or None when moagraph has no grader / no usable reference,
    moagraph's extracted answer, the reference it compared with).

    ``unwrap_json``: for the choice graders, read the reply's JSON ``"answer"``
    field first (moagraph's ``extract_json_answer``, which the math graders
    already apply); many RouteMoA replies are ``{"answer": "G"}``, which
    ``extract_choice`` alone does not read."""
    from moagraph.tasks.base import Example
    from moagraph.tasks.grading.choice import choice_equivalent, extract_choice
    from moagraph.tasks.grading.math_equiv import (
        extract_boxed,
        extract_json_answer,
        gsm8k_reference,
    )

    text = response or ""
    choice_text = (extract_json_answer(text) or text) if unwrap_json else text
    gt = str(ground_truth).strip()
    if dataset in LABELS:
        options, label_map = LABELS[dataset]
        idx = label_map.get(gt.lower())
        if idx is None:  # e.g. ocnli's "-" (no gold label)
            return None, None, gt
        letters = "ABCD"[: len(options)]
        got = extract_choice(choice_text, options, letters=letters)
        pick = options[letters.index(got)] if got else None
        return (1.0 if choice_equivalent(got, letters[idx]) else 0.0), pick, options[idx]
    if dataset in LETTERED:
        letters = LETTERED[dataset]
        if dataset == "cluewsc2020":
            ref = {"true": "A", "false": "B"}.get(gt.lower())
            got = extract_choice(choice_text, ["是", "否"], letters=letters)
        else:
            ref = gt.split("||")[0].strip().upper()
            got = extract_choice(choice_text, letters=letters)
        if not ref or ref not in letters:
            return None, got, gt
        return (1.0 if choice_equivalent(got, ref) else 0.0), got, ref
    if dataset in NUMERIC:
        ref = gsm8k_reference(gt) if "####" in gt else gt
        task = _task("gsm8k")
        ex = Example(id="x", question="", reference=ref)
        return task.grade(text, ex), task.extract(text), ref
    if dataset in MATH_JUDGED:
        ref = extract_boxed(gt)
        if ref is None:
            return None, None, None
        task = _task("math")
        return (
            task.grade(text, Example(id="x", question="", reference=ref)),
            task.extract(text),
            ref,
        )
    if dataset in MATH_SHORT:
        ref = gt.strip().strip("$").strip()
        if re.fullmatch(r"[A-Z]", ref):  # lettered question: the letters it offers
            offered = "".join(dict.fromkeys(re.findall(r"\(([A-Z])\)", question))) or "ABCD"
            got = extract_choice(choice_text, letters=offered)
            return (1.0 if choice_equivalent(got, ref) else 0.0), got, ref
        task = _task("math")
        return (
            task.grade(text, Example(id="x", question="", reference=ref)),
            task.extract(text),
            ref,
        )
    return None, None, None


# --------------------------------------------------------------------------- loading


class MissingData(SystemExit):
    pass


def find_eval_dir(repo: Path | str | None) -> Path:
    """The folder holding the released files: ``repo/emoa_large/eval`` or ``repo`` itself."""
    if repo is None:
        raise MissingData(
            "no data: pass --repo PATH/TO/RouteMoA (a clone of github.com/rongyan4/RouteMoA, "
            "or its emoa_large/eval folder)"
        )
    repo = Path(repo)
    for d in (repo / EVAL_SUBDIR, repo):
        if all((d / f).is_file() for f in FILES):
            return d
    d = repo / EVAL_SUBDIR if (repo / EVAL_SUBDIR).is_dir() else repo
    missing = [f for f in FILES if not (d / f).is_file()]
    raise MissingData(
        f"--repo {repo}: missing {', '.join(missing)} under {d}; pass --repo PATH/TO/RouteMoA "
        f"(a clone of github.com/rongyan4/RouteMoA holding {EVAL_SUBDIR}/{{{','.join(FILES)}}})"
    )


@dataclass
class Item:
    system: str
    category: str
    dataset: str
    item_id: str
    ground_truth: str
    question: str
    response: str
    parsed: Any
    released: float | None  # released per-item grade in [0, 1], None when not recorded
    latency: float
    cost: float
    mg: float | None = None  # moagraph's grade
    mg_answer: Any = None
    mg_ref: Any = None
    mg_raw: float | None = None  # moagraph's grade without JSON unwrapping for choice


TIMEOUT_MARK = "Error Occur!"  # the reply of a call that hit the 1000 s limit


def is_timeout(response: str) -> bool:
    return str(response or "").lstrip().startswith(TIMEOUT_MARK)


def released_grade(raw: dict[str, Any], metric: str) -> float | None:
    ic = raw.get("is_correct")
    if ic is not None:
        return float(ic)
    if metric == "norm_score" and is_timeout(raw.get("model_response")):
        return 0.0  # the release scores a timed-out item 0 (its summary divides by 15)
    if metric == "norm_score":
        m = _SCORE_RE.findall(str(raw.get("parsed_answer") or ""))
        if m:
            return float(m[0]) / 4.0  # the release reads the first "Score: N"
    return None


def load(eval_dir: Path) -> tuple[dict[str, list[Item]], dict[str, Any], dict[str, dict[str, str]]]:
    """(items per system, summary_all, metric name per dataset); checks every
    system answers exactly the questions of benchmark_questions.json."""

    def read(name: str) -> Any:
        with open(eval_dir / name, encoding="utf-8") as fh:
            return json.load(fh)

    bench = read("benchmark_questions.json")
    summary = read("summary_all.json")
    questions = {
        (cat, ds, str(it["item_id"])): it
        for cat, dss in bench["data"].items()
        for ds, d in dss.items()
        for it in d["items"]
    }
    out: dict[str, list[Item]] = {}
    metrics: dict[str, dict[str, str]] = {}
    for sysname in SYSTEMS:
        data = read(f"{sysname}.json")
        items = []
        for cat, dss in data["results"].items():
            for ds, d in dss.items():
                metric = d.get("summary", {}).get("metric_name", "accuracy")
                metrics.setdefault(sysname, {})[ds] = metric
                for raw in d["items"]:
                    key = (cat, ds, str(raw["item_id"]))
                    q = questions.get(key)
                    if q is None:
                        raise ValueError(f"{sysname}.json: item {key} not in benchmark_questions")
                    if str(q["ground_truth"]) != str(raw["ground_truth"]):
                        raise ValueError(f"{sysname}.json: item {key}: ground truth differs")
                    items.append(
                        Item(
                            system=sysname,
                            category=cat,
                            dataset=ds,
                            item_id=str(raw["item_id"]),
                            ground_truth=str(raw["ground_truth"]),
                            question=str(raw.get("full_prompt") or raw.get("question") or ""),
                            response=str(raw.get("model_response") or ""),
                            parsed=raw.get("parsed_answer"),
                            released=released_grade(raw, metric),
                            latency=float(raw.get("latency") or 0.0),
                            cost=float(raw.get("cost") or 0.0),
                        )
                    )
        keys = {(i.category, i.dataset, i.item_id) for i in items}
        if keys != set(questions):
            raise ValueError(
                f"{sysname}.json answers {len(keys)} items, benchmark_questions has {len(questions)}"
            )
        out[sysname] = items
    return out, summary, metrics


# --------------------------------------------------------------------------- aggregation


def grade_all(items: dict[str, list[Item]]) -> None:
    for its in items.values():
        for it in its:
            it.mg, it.mg_answer, it.mg_ref = moagraph_grade(
                it.dataset, it.response, it.ground_truth, question=it.question
            )
            it.mg_raw = moagraph_grade(
                it.dataset, it.response, it.ground_truth, False, question=it.question
            )[0]


def released_binary(it: Item) -> float | None:
    if it.released is None:
        return None
    if it.dataset in MATH_JUDGED:
        return 1.0 if it.released >= JUDGE_CORRECT else 0.0
    return it.released


def disagreement_kind(it: Item) -> str:
    """Why moagraph's grade differs from the released one. The prefix says
    which side is wrong on reading the reply (checked by hand on every
    disagreement of the released files; see docs/routemoa-reproduction.md)."""
    mg_ok = bool(it.mg is not None and it.mg >= 0.5)
    ans = None if it.mg_answer is None else str(it.mg_answer)
    if mg_ok:  # released (or judge) says wrong
        if it.dataset in MATH_JUDGED:
            return "judge: partial credit (< 3 of 4) for a right final answer"
        if it.dataset in LABELS or it.dataset in LETTERED:
            return "released error: keyword map misreads the reply"
        p = it.parsed
        last = str(p[-1] if isinstance(p, list) and p else ("" if isinstance(p, list) else p))
        last = last.strip()
        if re.search(r"self_score|confidence", it.response) and last in ("0", "1", "0.99", "1.0"):
            return "released error: NumberParser reads the JSON self_score (last number)"
        if not last:
            return "released error: NumberParser finds no number in a letter answer"
        if ans is not None and ("\\!" in ans or "," in ans):
            return "released error: NumberParser splits a thousands-separated number"
        return "released error: other"
    # moagraph says wrong, released (or judge) says right
    if ans is None:
        return "moagraph miss: no option extracted (bold 'B. text' / 'Option B')"
    if ans.rstrip().endswith(","):
        return 'moagraph miss: JSON bare number keeps a trailing comma ("answer": 600, -> "600,")'
    if it.dataset in LABELS or it.dataset in LETTERED:
        return "moagraph miss: reads another option mentioned later in the reply"
    if re.search(r"[A-Za-z]{4,}", ans) and "sqrt" not in ans and "\\" not in ans:
        return "moagraph miss: 'answer is' rule takes a sentence, not the final number"
    if not re.search(r"\d", ans):
        return "moagraph miss: 'answer is' rule takes a sentence, not the final number"
    return "format: moagraph rejects the answer's form (5:00 AM vs 5am, plain sqrt, unit)"


def disagreements(items: dict[str, list[Item]]) -> list[tuple[str, Item]]:
    out = []
    for sysname in SYSTEMS:
        for it in items[sysname]:
            rb = released_binary(it)
            if it.mg is None or rb is None:
                continue
            if (it.mg >= 0.5) != (rb >= 0.5):
                out.append((disagreement_kind(it), it))
    return out


def macro_weights(its: list[Item], recorded_cost_only: bool = False) -> np.ndarray:
    """Per-item weights summing to 1 that reproduce the paper's aggregate:
    mean within a dataset, macro over datasets in a category, macro over categories.

    ``recorded_cost_only``: the released cost averages leave out items whose
    cost is 0 (not recorded): weight 0 for those, the mean over the rest."""
    per_ds = Counter((i.category, i.dataset) for i in its)
    ds_per_cat = Counter(c for c, _ in per_ds)
    n_cat = len(ds_per_cat)
    if recorded_cost_only:
        rec = Counter((i.category, i.dataset) for i in its if i.cost > 0)
        return np.array(
            [
                1.0 / (n_cat * ds_per_cat[i.category] * rec[(i.category, i.dataset)])
                if i.cost > 0
                else 0.0
                for i in its
            ]
        )
    return np.array(
        [1.0 / (n_cat * ds_per_cat[i.category] * per_ds[(i.category, i.dataset)]) for i in its]
    )


def dataset_scores(
    its: list[Item], summary: dict[str, Any], which: str, drop: set[tuple] | None = None
) -> dict[tuple, float]:
    """Per dataset accuracy: ``released`` (per-item grades; the summary's value
    where items carry none) or ``moagraph`` (moagraph's grade where it grades,
    else the released one)."""
    sysname = its[0].system
    by: dict[tuple, list[Item]] = defaultdict(list)
    for i in its:
        if drop and (i.category, i.dataset, i.item_id) in drop:
            continue
        by[(i.category, i.dataset)].append(i)
    out = {}
    for (cat, ds), group in by.items():
        summ = float(summary["per_dataset"][cat][ds][sysname]["accuracy"])
        vals = []
        for i in group:
            v = i.released
            if which == "moagraph" and i.mg is not None:
                v = i.mg
            elif which == "raw" and i.mg is not None:
                v = i.mg_raw
            vals.append(v)
        if any(v is None for v in vals):
            out[(cat, ds)] = summ
        else:
            out[(cat, ds)] = float(np.mean(vals))
    return out


def macro(ds_vals: dict[tuple, float]) -> float:
    cats: dict[str, list[float]] = defaultdict(list)
    for (cat, _), v in ds_vals.items():
        cats[cat].append(v)
    return float(np.mean([np.mean(v) for v in cats.values()]))


def item_values(its: list[Item], ds_vals: dict[tuple, float], which: str) -> np.ndarray:
    """Per-item accuracy values for the bootstrap; items without a per-item
    grade carry their dataset's value (no variance from those datasets)."""
    out = []
    for i in its:
        v = i.released
        if i.mg is not None and which in ("moagraph", "raw"):
            v = i.mg if which == "moagraph" else i.mg_raw
        out.append(ds_vals[(i.category, i.dataset)] if v is None else v)
    return np.array(out, dtype=float)


def ratio_bootstrap(
    wa: np.ndarray,
    a: np.ndarray,
    wb: np.ndarray,
    b: np.ndarray,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """sum(wa a) / sum(wb b) - 1 (weighted means) with a percentile bootstrap
    over paired items (weights renormalised in each resample)."""
    rng = np.random.default_rng(seed)
    point = float((wa * a).sum() / wa.sum() / ((wb * b).sum() / wb.sum()) - 1.0)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    ma = (wa * a)[idx].sum(axis=1) / np.maximum(wa[idx].sum(axis=1), 1e-300)
    mb = (wb * b)[idx].sum(axis=1) / np.maximum(wb[idx].sum(axis=1), 1e-300)
    ok = mb > 0  # a resample with no recorded cost for b says nothing about the ratio
    lo, hi = np.percentile(ma[ok] / mb[ok] - 1.0, [2.5, 97.5])
    return point, float(lo), float(hi)


def analyse(items: dict[str, list[Item]], summary: dict[str, Any]) -> dict[str, Any]:
    from moagraph.graph.evaluate import wilson_interval
    from moagraph.search.compare import paired_bootstrap

    order = {s: sorted(items[s], key=lambda i: (i.category, i.dataset, i.item_id)) for s in SYSTEMS}
    res: dict[str, Any] = {"systems": {}}
    for s in SYSTEMS:
        its = order[s]
        w = macro_weights(its)
        wc = macro_weights(its, recorded_cost_only=True)
        rel_ds = dataset_scores(its, summary, "released")
        mg_ds = dataset_scores(its, summary, "moagraph")
        raw_ds = dataset_scores(its, summary, "raw")
        graded = [i for i in its if i.mg is not None]
        k = sum(i.mg for i in graded)
        k_raw = sum(i.mg_raw or 0.0 for i in graded)
        rel_graded = [i.released for i in graded if i.released is not None]
        summ_ds = {
            (c, d): float(v[s]["accuracy"])
            for c, dd in summary["per_dataset"].items()
            for d, v in dd.items()
        }
        res["systems"][s] = {
            "n": len(its),
            "summary_acc": float(summary["global_avg_by_category"][s]["accuracy_macro_avg"]),
            "summary_latency": float(summary["global_avg_by_category"][s]["latency_avg_macro_avg"]),
            "summary_cost": float(
                summary["global_avg_by_category"][s]["cost_normalized_macro_avg"]
            ),
            "summary_acc_30": float(summary["global_avg"][s]["accuracy_macro_avg"]),
            "released_macro": macro(rel_ds),
            "summary_ds_macro": macro(summ_ds),
            "moagraph_macro": macro(mg_ds),
            "moagraph_raw_macro": macro(raw_ds),
            "graded_raw": k_raw / len(graded) if graded else float("nan"),
            "graded_n": len(graded),
            "graded_mg": k / len(graded) if graded else float("nan"),
            "graded_mg_ci": wilson_interval(k, len(graded)),
            "graded_rel": float(np.mean(rel_graded)) if rel_graded else float("nan"),
            "graded_rel_ci": wilson_interval(sum(rel_graded), len(rel_graded)),
            "latency_macro": float((w * np.array([i.latency for i in its])).sum()),
            "cost_macro": float((wc * np.array([i.cost for i in its])).sum() * 1e4),
            "cost_macro_zero": float((w * np.array([i.cost for i in its])).sum() * 1e4),
            "cost_unrecorded": sum(1 for i in its if i.cost <= 0),
            "latency_mean": float(np.mean([i.latency for i in its])),
            "cost_mean": float(np.mean([i.cost for i in its]) * 1e4),
            "_order": its,
            "_w": w,
            "_wc": wc,
            "_rel_ds": rel_ds,
            "_mg_ds": mg_ds,
            "_raw_ds": raw_ds,
        }
    # paired RouteMoA - MoA
    r, m = res["systems"]["routemoa"], res["systems"]["moa"]
    ri, mi = r["_order"], m["_order"]
    assert [(i.category, i.dataset, i.item_id) for i in ri] == [
        (i.category, i.dataset, i.item_id) for i in mi
    ]
    w = r["_w"]
    n = len(w)
    both = [j for j in range(n) if ri[j].mg is not None and mi[j].mg is not None]
    pairs: dict[str, Any] = {}
    pairs["graded_acc"] = paired_bootstrap(
        [ri[j].mg for j in both], [mi[j].mg for j in both], seed=0
    )
    # sensitivity: drop every item on which any system timed out
    timed = {
        (i.category, i.dataset, i.item_id)
        for s in SYSTEMS
        for i in items[s]
        if is_timeout(i.response)
    }
    res["timed_keys"] = timed
    res["timeouts"] = {s: sum(is_timeout(i.response) for i in items[s]) for s in SYSTEMS}
    res["timeout_latency"] = {
        s: float(np.mean([i.latency for i in items[s] if is_timeout(i.response)] or [0.0]))
        for s in SYSTEMS
    }
    res["no_timeout_items"] = sum(
        1 for i in ri if (i.category, i.dataset, i.item_id) not in timed and i.mg is not None
    )
    for s in SYSTEMS:
        keep = [
            i
            for i in res["systems"][s]["_order"]
            if i.mg is not None and (i.category, i.dataset, i.item_id) not in timed
        ]
        k = sum(i.mg for i in keep)
        res["systems"][s]["nt_mg"] = k / len(keep) if keep else float("nan")
        its_s = res["systems"][s]["_order"]
        res["systems"][s]["nt_macro_mg"] = macro(dataset_scores(its_s, summary, "moagraph", timed))
        res["systems"][s]["nt_macro_rel"] = macro(dataset_scores(its_s, summary, "released", timed))
        res["systems"][s]["nt_mg_ci"] = wilson_interval(k, len(keep))
    keep_j = [j for j in both if (ri[j].category, ri[j].dataset, ri[j].item_id) not in timed]
    pairs["graded_acc_no_timeouts"] = paired_bootstrap(
        [ri[j].mg for j in keep_j], [mi[j].mg for j in keep_j], seed=0
    )
    for which, key in (("moagraph", "_mg_ds"), ("released", "_rel_ds"), ("raw", "_raw_ds")):
        a = item_values(ri, r[key], which) * w * n
        b = item_values(mi, m[key], which) * w * n
        pairs[f"macro_acc_{which}"] = paired_bootstrap(list(a), list(b), seed=0)
    lat_r = np.array([i.latency for i in ri])
    lat_m = np.array([i.latency for i in mi])
    cost_r = np.array([i.cost for i in ri]) * 1e4
    cost_m = np.array([i.cost for i in mi]) * 1e4
    pairs["latency_diff"] = paired_bootstrap(list(lat_r * w * n), list(lat_m * w * n), seed=0)
    wcr, wcm = r["_wc"], m["_wc"]
    pairs["cost_diff"] = paired_bootstrap(list(cost_r * wcr * n), list(cost_m * wcm * n), seed=0)
    pairs["latency_rel"] = ratio_bootstrap(w, lat_r, w, lat_m)
    pairs["cost_rel"] = ratio_bootstrap(wcr, cost_r, wcm, cost_m)
    pairs["cost_rel_zero"] = ratio_bootstrap(w, cost_r, w, cost_m)
    res["pairs"] = pairs
    res["summary_rel"] = {
        "cost": r["summary_cost"] / m["summary_cost"] - 1,
        "latency": r["summary_latency"] / m["summary_latency"] - 1,
    }
    # coverage
    cov = Counter()
    for i in order["moa"]:
        g = grader_of(i.dataset)
        cov[
            "moagraph"
            if i.mg is not None
            else ("released-binary" if i.released is not None else "released-dataset-only")
        ] += 1
        cov[f"grader:{g or 'released grade only'}"] += 1
    res["coverage"] = cov
    res["disagreements"] = disagreements(items)
    return res


# --------------------------------------------------------------------------- report


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _ci(t: tuple[float, float], scale: float = 100.0, fmt: str = ".1f") -> str:
    return f"[{t[0] * scale:{fmt}}, {t[1] * scale:{fmt}}]"


def report(res: dict[str, Any], show: int) -> str:
    S = res["systems"]
    P = res["pairs"]
    lines = ["# RouteMoA reproduction from the released outputs", ""]
    lines += [
        "Source: `emoa_large/eval/{moa,routemoa,smoa}.json`, `summary_all.json` of "
        "github.com/rongyan4/RouteMoA (large model pool, 30 datasets x 15 items = 450).",
        "Aggregate as the paper: mean per dataset, macro over datasets within each of the 5 "
        "categories, macro over categories. Cost: normalized cost (USD per item x 10^4) as released; "
        "latency: seconds per item as released.",
        "",
        "| | Paper | Released summary | Released per-item, recomputed | moagraph re-grade "
        "(released grade where moagraph has no grader) | same, choice graders without JSON "
        "unwrapping | moagraph on re-graded items [95% Wilson] | Released on the same items |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in ("routemoa", "moa", "smoa"):
        x = S[s]
        lines.append(
            f"| accuracy {NAMES[s]} | {PAPER['acc'][s]:.1f} | {_pct(x['summary_acc'])} | "
            f"{_pct(x['released_macro'])} | {_pct(x['moagraph_macro'])} | "
            f"{_pct(x['moagraph_raw_macro'])} | "
            f"{_pct(x['graded_mg'])} {_ci(x['graded_mg_ci'])} (n={x['graded_n']}) | "
            f"{_pct(x['graded_rel'])} {_ci(x['graded_rel_ci'])} |"
        )
    lines += [
        "",
        "| | Paper | Released summary | Recomputed from items (as released: items with "
        "cost 0 left out) [paired bootstrap 95%] | Recomputed, cost 0 counted as 0 |",
        "|---|---|---|---|---|",
    ]
    for s in ("routemoa", "moa", "smoa"):
        x = S[s]
        lines.append(
            f"| cost {NAMES[s]} (normalized) | | {x['summary_cost']:.1f} | {x['cost_macro']:.1f} "
            f"({x['cost_unrecorded']} items with cost 0) | {x['cost_macro_zero']:.1f} |"
        )
    for s in ("routemoa", "moa", "smoa"):
        x = S[s]
        lines.append(
            f"| latency {NAMES[s]} (s) | | {x['summary_latency']:.1f} | {x['latency_macro']:.1f} | |"
        )
    cr, lr, cz = P["cost_rel"], P["latency_rel"], P["cost_rel_zero"]
    lines.append(
        f"| cost RouteMoA vs MoA | {PAPER['cost_rel']:+.1f}% | {100 * res['summary_rel']['cost']:+.1f}% | "
        f"{100 * cr[0]:+.1f}% {_ci(cr[1:])} | {100 * cz[0]:+.1f}% {_ci(cz[1:])} |"
    )
    lines.append(
        f"| latency RouteMoA vs MoA | {PAPER['latency_rel']:+.1f}% | "
        f"{100 * res['summary_rel']['latency']:+.1f}% | {100 * lr[0]:+.1f}% {_ci(lr[1:])} | |"
    )
    lines += [
        "",
        "Paired RouteMoA - MoA (bootstrap over the 450 paired items, 10,000 resamples, seed 0):",
        "",
    ]
    for key, label, scale, unit in (
        ("macro_acc_moagraph", "accuracy, paper aggregate, moagraph re-grade", 100, " pts"),
        (
            "macro_acc_raw",
            "accuracy, paper aggregate, moagraph re-grade without JSON unwrapping",
            100,
            " pts",
        ),
        ("macro_acc_released", "accuracy, paper aggregate, released grades", 100, " pts"),
        ("graded_acc", "accuracy on items both re-graded by moagraph (micro)", 100, " pts"),
        (
            "graded_acc_no_timeouts",
            "same, items where any system timed out dropped",
            100,
            " pts",
        ),
        ("cost_diff", "normalized cost per item, paper aggregate", 1, ""),
        ("latency_diff", "latency per item (s), paper aggregate", 1, " s"),
    ):
        d, lo, hi = P[key]
        lines.append(f"- {label}: {d * scale:+.1f}{unit} [{lo * scale:+.1f}, {hi * scale:+.1f}]")
    to = res["timeouts"]
    lines += [
        "",
        "Timeouts: replies `Error Occur! response text:` (the call hit the 1000 s limit; cost "
        "recorded as 0): "
        + ", ".join(
            f"{NAMES[s]} {to[s]} (mean latency {res['timeout_latency'][s]:.0f} s)" for s in SYSTEMS
        )
        + ". The release grades them 0, averages cost without them and latency with them "
        "(capped at 1000 s).",
        "",
        f"moagraph accuracy on the {res['no_timeout_items']} re-graded items where no system "
        "timed out: "
        + ", ".join(
            f"{NAMES[s]} {_pct(S[s]['nt_mg'])} {_ci(S[s]['nt_mg_ci'])}"
            for s in ("routemoa", "moa", "smoa")
        )
        + ".",
        "",
        f"Paper aggregate without the {len(res['timed_keys'])} items on which any system timed "
        "out (released grades / moagraph re-grade): "
        + ", ".join(
            f"{NAMES[s]} {_pct(S[s]['nt_macro_rel'])} / {_pct(S[s]['nt_macro_mg'])}"
            for s in ("routemoa", "moa", "smoa")
        )
        + ".",
    ]
    cov = res["coverage"]
    lines += [
        "",
        f"Coverage per system: {cov['moagraph']} items re-graded by moagraph, "
        f"{cov['released-binary']} with a released per-item grade only, "
        f"{cov['released-dataset-only']} with a released dataset-level score only.",
        "",
        "| grader | items per system |",
        "|---|---|",
    ]
    for k, v in sorted(cov.items()):
        if k.startswith("grader:"):
            lines.append(f"| {k[7:]} | {v} |")
    dis = res["disagreements"]
    lines += ["", f"## Disagreements: {len(dis)} (system, item) pairs", ""]
    kinds = Counter(k for k, _ in dis)
    by_sys = Counter((k, it.system) for k, it in dis)
    lines += ["| kind | total | MoA | RouteMoA | SMoA |", "|---|---|---|---|---|"]
    for k, v in kinds.most_common():
        lines.append(
            f"| {k} | {v} | {by_sys[(k, 'moa')]} | {by_sys[(k, 'routemoa')]} | {by_sys[(k, 'smoa')]} |"
        )
    by_ds = Counter(it.dataset for _, it in dis)
    lines += ["", "By dataset: " + ", ".join(f"{d} {n}" for d, n in by_ds.most_common()), ""]
    for k, _ in kinds.most_common():
        ex = [it for kk, it in dis if kk == k][:show]
        lines.append(f"### {k}")
        for it in ex:
            tail = " ".join(it.response.split())[-160:]
            lines.append(
                f"- {NAMES[it.system]} {it.dataset}/{it.item_id}: released {it.released:g}, "
                f"moagraph {it.mg:g}; moagraph read {str(it.mg_answer)[:60]!r} vs reference "
                f"{str(it.mg_ref)[:60]!r}; released parse {str(it.parsed)[:60]!r}; reply ends "
                f"`{tail.replace('`', '')}`"
            )
        lines.append("")
    lines += [
        "## Every disagreement",
        "",
        "| system | dataset | item | released | moagraph | kind |",
        "|---|---|---|---|---|---|",
    ]
    for k, it in dis:
        lines.append(
            f"| {NAMES[it.system]} | {it.dataset} | {it.item_id} | {it.released:g} | {it.mg:g} | {k} |"
        )
    return "\n".join(lines) + "\n"


def print_rich(res: dict[str, Any]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        return
    S, P = res["systems"], res["pairs"]
    t = Table(title="RouteMoA large pool: paper vs released outputs vs moagraph re-grade")
    for c in (
        "system",
        "paper acc",
        "released acc",
        "moagraph acc",
        "re-graded n: mg / released",
        "cost",
        "latency s",
    ):
        t.add_column(c)
    for s in ("routemoa", "moa", "smoa"):
        x = S[s]
        t.add_row(
            NAMES[s],
            f"{PAPER['acc'][s]:.1f}",
            _pct(x["summary_acc"]),
            _pct(x["moagraph_macro"]),
            f"{x['graded_n']}: {_pct(x['graded_mg'])} {_ci(x['graded_mg_ci'])} / {_pct(x['graded_rel'])}",
            f"{x['cost_macro']:.1f}",
            f"{x['latency_macro']:.1f}",
        )
    cr, lr = P["cost_rel"], P["latency_rel"]
    t.add_row(
        "RouteMoA vs MoA",
        f"cost {PAPER['cost_rel']:+.1f}%, lat {PAPER['latency_rel']:+.1f}%",
        f"{100 * (S['routemoa']['summary_acc'] - S['moa']['summary_acc']):+.1f} pts",
        f"{100 * P['macro_acc_moagraph'][0]:+.1f} {_ci(P['macro_acc_moagraph'][1:])}",
        f"{100 * P['graded_acc'][0]:+.1f} {_ci(P['graded_acc'][1:])}",
        f"{100 * cr[0]:+.1f}% {_ci(cr[1:])}",
        f"{100 * lr[0]:+.1f}% {_ci(lr[1:])}",
    )
    Console().print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Reproduce RouteMoA's large-pool comparison from its released per-item "
        "outputs and re-grade them with moagraph's graders.",
    )
    ap.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="a clone of github.com/rongyan4/RouteMoA (or its emoa_large/eval folder)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "out" / "bench_routemoa_repro.md",
    )
    ap.add_argument("--show", type=int, default=3, help="examples per disagreement kind")
    a = ap.parse_args(argv)
    try:
        eval_dir = find_eval_dir(a.repo)
    except MissingData as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    items, summary, _ = load(eval_dir)
    grade_all(items)
    res = analyse(items, summary)
    print_rich(res)
    md = report(res, a.show)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(md, encoding="utf-8")
    print(md)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
