"""Study reports: best-so-far curves, Pareto front, best graph, one table.

Everything is read back from the study SQLite file, so a report can be made
for an interrupted or finished study, on any machine, without the pool.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from moagraph.graph.spec import Graph
from moagraph.search.study import Study, StudyError, TrialRow, list_studies, pareto_front


@dataclass
class StudyData:
    name: str
    config: dict[str, Any]
    trials: list[TrialRow]
    result: dict[str, Any] | None

    @property
    def optimizer(self) -> str:
        return str(self.config.get("optimizer", "?"))


@dataclass
class ReportFiles:
    convergence_png: Path
    pareto_png: Path
    best_graph_png: Path | None
    html: Path
    table: Table


def load_studies(path: str | Path, names: list[str] | None = None) -> list[StudyData]:
    if not Path(path).exists():
        raise StudyError(
            f"study file {path} does not exist; run `moagraph search --study {path}` first"
        )
    out = []
    for name in names or list_studies(path):
        s = Study.load(path, name)
        try:
            out.append(StudyData(name, s.config, s.trials(), s.result()))
        finally:
            s.close()
    if not out:
        raise StudyError(f"study file {path} holds no studies")
    return out


def best_so_far(trials: list[TrialRow]) -> list[float]:
    best, out = float("-inf"), []
    for t in trials:
        best = max(best, t.reward)
        out.append(best)
    return out


def summary_table(studies: list[StudyData], title: str = "Studies") -> Table:
    t = Table(title=title)
    for col in (
        "study",
        "optimizer",
        "trials",
        "best train",
        "held-out",
        "cost",
        "best graph",
        "notes",
    ):
        t.add_column(
            col, justify="right" if col in ("trials", "best train", "held-out", "cost") else "left"
        )
    for s in studies:
        r = s.result or {}
        best_train = max((x.reward for x in s.trials), default=float("nan"))
        held = r.get("heldout_reward")
        g = r.get("best_graph")
        desc = _graph_summary(Graph.model_validate(g)) if g else "-"
        stats = r.get("stats", {})
        notes = []
        if stats.get("parse_failure_rate") is not None:
            notes.append(
                f"agent parse failures {stats['parse_failures']}/{stats['parse_failures'] + stats['agent_replies_ok']}"
            )
        if (
            s.config.get("sink_mode") == "select"
            or (s.config.get("space") or {}).get("sink_mode") == "select"
        ):
            notes.append("oracle-select objective (upper bound)")
        t.add_row(
            s.name,
            s.optimizer,
            str(len(s.trials)),
            f"{best_train:.3f}",
            "-" if held is None else f"{held:.3f}",
            "-" if not r else f"{r.get('cost', 0):.2f}",
            desc,
            "; ".join(notes) or "-",
        )
    return t


def _graph_summary(g: Graph) -> str:
    counts: dict[str, int] = {}
    for n in g.llm_nodes:
        counts[n.model or "?"] = counts.get(n.model or "?", 0) + 1
    edges = sum(len(n.inputs) for n in g.llm_nodes)
    return ", ".join(f"{c}x {m}" for m, c in counts.items()) + (
        f" ({edges} edges)" if edges else ""
    )


def write_report(
    path: str | Path, outdir: str | Path, names: list[str] | None = None
) -> ReportFiles:
    """PNG + HTML report of the studies in ``path`` (all, or ``names``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = load_studies(path, names)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for s in studies:
        ys = best_so_far(s.trials)
        ax.plot(range(1, len(ys) + 1), ys, marker=".", label=f"{s.optimizer} ({s.name})")
    ax.set_xlabel("graph evaluations")
    ax.set_ylabel("best training reward so far")
    ax.set_title("Search progress")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    conv = out / "convergence.png"
    fig.tight_layout()
    fig.savefig(conv, dpi=130)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    all_trials = [t for s in studies for t in s.trials]
    for s in studies:
        ax.scatter(
            [t.cost for t in s.trials],
            [t.reward for t in s.trials],
            s=12,
            alpha=0.5,
            label=s.optimizer,
        )
    front = pareto_front(all_trials, use_latency=False)
    ax.plot([t.cost for t in front], [t.reward for t in front], "k-o", ms=4, label="Pareto front")
    ax.set_xlabel("planned cost (normalised FLOPs)")
    ax.set_ylabel("training reward")
    ax.set_title("Accuracy vs compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    par = out / "pareto.png"
    fig.tight_layout()
    fig.savefig(par, dpi=130)
    plt.close(fig)

    best_png = None
    best = _overall_best(studies)
    if best is not None:
        best_png = _draw_graph(best, out / "best_graph")

    table = summary_table(studies, title=f"Studies in {path}")
    page = out / "report.html"
    page.write_text(_html(studies, conv, par, best_png, best, front), encoding="utf-8")
    return ReportFiles(conv, par, best_png, page, table)


def _overall_best(studies: list[StudyData]) -> Graph | None:
    scored = [
        (
            s.result.get("heldout_reward") or s.result.get("train_reward") or 0.0,
            s.result["best_graph"],
        )
        for s in studies
        if s.result and s.result.get("best_graph")
    ]
    if not scored:
        return None
    return Graph.model_validate(max(scored, key=lambda x: x[0])[1])


def _draw_graph(graph: Graph, stem: Path) -> Path:
    try:
        from moagraph.graph.draw import draw_png

        return draw_png(graph, stem.with_suffix(".png"))
    except ImportError:  # pragma: no cover - before graph.draw exists
        import matplotlib.pyplot as plt
        import networkx as nx

        g = graph.to_networkx()
        fig, ax = plt.subplots(figsize=(5, 4))
        nx.draw_networkx(
            g,
            ax=ax,
            labels={n.id: f"{n.id}\n{n.model or n.role.value}" for n in graph.nodes},
            font_size=7,
        )
        p = stem.with_suffix(".png")
        fig.savefig(p, dpi=120)
        plt.close(fig)
        return p


def _html(
    studies: list[StudyData],
    conv: Path,
    par: Path,
    best_png: Path | None,
    best: Graph | None,
    front: list[TrialRow],
) -> str:
    rows = []
    for s in studies:
        r = s.result or {}
        held = r.get("heldout_reward")
        rows.append(
            f"<tr><td>{html.escape(s.name)}</td><td>{html.escape(s.optimizer)}</td><td>{len(s.trials)}</td>"
            f"<td>{max((t.reward for t in s.trials), default=float('nan')):.3f}</td>"
            f"<td>{'-' if held is None else f'{held:.3f}'}</td>"
            f"<td>{html.escape(str(r.get('stats', {})))}</td></tr>"
        )
    prow = "".join(
        f"<tr><td>{t.number}</td><td>{t.reward:.3f}</td><td>{t.cost:.2f}</td><td>{t.latency:.3g}</td>"
        f"<td>{html.escape(_graph_summary(t.graph))}</td></tr>"
        for t in front
    )
    best_html = ""
    if best is not None:
        img = f'<img src="{best_png.name}" style="max-width:480px">' if best_png else ""
        best_html = f"<h2>Best graph</h2>{img}<pre>{html.escape(best.to_yaml())}</pre>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>moagraph search report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}</style>
</head><body><h1>moagraph search report</h1>
<table><tr><th>study</th><th>optimizer</th><th>trials</th><th>best train</th><th>held-out</th><th>stats</th></tr>{"".join(rows)}</table>
<h2>Best reward so far</h2><img src="{conv.name}">
<h2>Pareto front (reward vs planned cost)</h2><img src="{par.name}">
<table><tr><th>trial</th><th>reward</th><th>cost</th><th>latency s</th><th>graph</th></tr>{prow}</table>
{best_html}</body></html>"""
