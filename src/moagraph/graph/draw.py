"""Pictures of collaboration graphs: a PNG and a standalone HTML page.

Layout is layered left to right by topological generation, so the flow of
a query (first answers -> refinements -> sink) reads like the paper figures.
Colour = model, marker = role, the sink gets a thick ring. Input edges (they
carry text) are solid grey; condition edges (they only order: the target runs
when the answers of its ``condition.among`` nodes disagree) are dashed orange and
labelled with the condition (``disagree`` / ``agree<0.5``).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from moagraph.graph.spec import Condition, Graph, Role
from moagraph.models.pool import Pool

__all__ = ["condition_label", "draw", "draw_html", "draw_png", "edge_styles", "layout"]

ROLE_MARKERS = {
    Role.ASSISTANT: "o",
    Role.FUSER: "D",
    Role.AGGREGATOR: "s",
    Role.VOTE: "^",
    Role.JUDGE: "h",
}


INPUT_EDGE = {"color": "0.45", "linestyle": "solid"}
CONDITION_EDGE = {"color": "darkgoldenrod", "linestyle": "dashed"}  # not a tab10 model colour


def condition_label(cond: Condition) -> str:
    """Short edge label: ``disagree`` or ``agree<0.5``."""
    return "disagree" if cond.when == "disagree" else f"agree<{cond.cutoff:g}"


@dataclass(frozen=True)
class EdgeStyle:
    src: str
    dst: str
    kind: str  # "input" (carries text) or "condition" (orders only)
    color: str
    linestyle: str
    label: str  # the condition on one condition edge per node, else ""


def edge_styles(graph: Graph) -> list[EdgeStyle]:
    """How each edge of ``graph.to_networkx()`` is drawn (``label``: the condition, on
    one condition edge per conditional node; the PNG writes it above that node). A node
    whose ``among`` are all inputs too has no condition edge: its label goes on its
    middle input edge instead."""
    g = graph.to_networkx()
    by_id = {n.id: n for n in graph.nodes}
    out: list[EdgeStyle] = []
    labelled: set[str] = set()
    for src, dst, kind in g.edges(data="kind", default="input"):
        style = CONDITION_EDGE if kind == "condition" else INPUT_EDGE
        label = ""
        cond = by_id[dst].condition
        if cond is not None and dst not in labelled:
            cond_edges = [s for s in cond.among if s not in by_id[dst].inputs]
            carriers = cond_edges or list(cond.among)
            if src == carriers[len(carriers) // 2]:
                label = condition_label(cond)
                labelled.add(dst)
        out.append(EdgeStyle(src, dst, str(kind), style["color"], style["linestyle"], label))
    return out


@dataclass(frozen=True)
class DrawResult:
    png: Path
    html: Path


def layout(graph: Graph) -> dict[str, tuple[float, float]]:
    """x = topological generation, y = position within it (centred), in node order."""
    order = {n.id: i for i, n in enumerate(graph.nodes)}
    pos: dict[str, tuple[float, float]] = {}
    for x, gen in enumerate(nx.topological_generations(graph.to_networkx())):
        ids = sorted(gen, key=order.__getitem__)
        for k, nid in enumerate(ids):
            pos[nid] = (float(x), (len(ids) - 1) / 2.0 - k)
    return pos


def _model_colours(graph: Graph) -> dict[str, tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(graph.models_used)}


def _calls(graph: Graph) -> str:
    """``3 calls``; a conditional graph: ``2-3 calls`` (the conditional nodes may be skipped)."""
    n = len(graph.llm_nodes)
    k = sum(1 for x in graph.llm_nodes if x.condition is not None)
    return f"{n - k}-{n} calls" if k else f"{n} calls"


def draw_png(graph: Graph, path: str | Path, pool: Pool | None = None, *, dpi: int = 150) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    pos = layout(graph)
    colours = _model_colours(graph)
    n_gen = 1 + max(x for x, _ in pos.values())
    tallest = max(sum(1 for x, _ in pos.values() if x == g) for g in range(int(n_gen)))
    fig, ax = plt.subplots(figsize=(max(4.0, 2.2 * n_gen + 1.5), max(3.0, 1.3 * tallest + 1.2)))
    for e in edge_styles(graph):
        cond = e.kind == "condition"
        ax.annotate(
            "",
            xy=pos[e.dst],
            xytext=pos[e.src],
            arrowprops={
                "arrowstyle": "-|>",
                "color": e.color,
                "linestyle": e.linestyle,
                "lw": 1.4 if cond else 1.2,
                "shrinkA": 16,
                "shrinkB": 16,
                "connectionstyle": f"arc3,rad={-0.12 if cond else 0.06}",
            },
            gid=f"edge:{e.kind}:{e.src}->{e.dst}",
        )
        if e.label:  # once per conditional node, just above it, where its dashed edges arrive
            x1, y1 = pos[e.dst]
            ax.text(
                x1,
                y1 + 0.24,
                "if " + e.label,
                ha="center",
                va="bottom",
                fontsize=7,
                color=e.color,
                style="italic",
                zorder=5,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
            )
    for n in graph.nodes:
        x, y = pos[n.id]
        colour = colours.get(n.model or "", (0.85, 0.85, 0.85, 1.0))
        sink = n.id == graph.sink
        ax.scatter(
            [x],
            [y],
            s=900 if sink else 650,
            marker=ROLE_MARKERS[n.role],
            c=[colour],
            edgecolors="black",
            linewidths=3.0 if sink else 0.8,
            zorder=3,
        )
        ax.text(
            x,
            y,
            n.id,
            ha="center",
            va="center",
            fontsize=8,
            zorder=4,
            weight="bold" if sink else None,
        )
        under = n.model or n.role.value
        if pool is not None and n.model and n.model in pool:
            under = pool[n.model].display
        ax.text(
            x,
            y - 0.32,
            under + (" (sink)" if sink else ""),
            ha="center",
            va="top",
            fontsize=7,
            zorder=4,
        )
    handles = [
        Line2D([], [], marker="o", ls="", color=c, markersize=9, label=m)
        for m, c in colours.items()
    ]
    handles += [
        Line2D(
            [],
            [],
            marker=ROLE_MARKERS[r],
            ls="",
            color="0.6",
            markeredgecolor="black",
            markersize=9,
            label=r.value,
        )
        for r in Role
        if any(n.role is r for n in graph.nodes)
    ]
    if graph.conditional:
        handles += [
            Line2D([], [], color=INPUT_EDGE["color"], ls="solid", label="input (text)"),
            Line2D([], [], color=CONDITION_EDGE["color"], ls="dashed", label="condition (runs if)"),
        ]
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False
    )
    ax.set_title(
        f"{graph.name or 'graph'}  (width {graph.width}, depth {graph.depth}, {_calls(graph)})",
        fontsize=10,
    )
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.6)
    ax.axis("off")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return out


def draw_html(graph: Graph, path: str | Path, png: Path, pool: Pool | None = None) -> Path:
    """A standalone page: the PNG inlined as base64 plus a node table (no CDN, no JS)."""
    b64 = base64.b64encode(png.read_bytes()).decode("ascii")
    e = html.escape
    rows = []
    for n in graph.nodes:
        spec = pool[n.model] if pool is not None and n.model and n.model in pool else None
        size = f"{spec.params_b:g}B" if spec else ""
        rows.append(
            f"<tr><td>{e(n.id)}{' <b>(sink)</b>' if n.id == graph.sink else ''}</td><td>{e(n.role.value)}</td>"
            f"<td>{e(n.model or '')}</td><td>{e(spec.display if spec else '')}</td><td>{size}</td>"
            f"<td>{e(', '.join(n.inputs))}</td>"
            f"<td>{e('runs ' + n.condition.text()) if n.condition else 'always'}</td></tr>"
        )
    conditional = [n for n in graph.nodes if n.condition is not None]
    cond_note = ""
    if conditional:
        items = "".join(
            f"<li><code>{e(n.id)}</code> runs only {e(n.condition.text())} "
            f"(<code>{e(condition_label(n.condition))}</code>)</li>"
            for n in conditional
            if n.condition is not None
        )
        cond_note = (
            f"<p>Conditional graph: {len(conditional)} node(s) run only when earlier answers "
            "disagree, otherwise they are skipped at no cost. Solid grey edges carry text "
            "(inputs); dashed orange edges are conditions (they only order).</p>"
            f"<ul>{items}</ul>"
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(graph.name or "graph")}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:left}}
th{{background:#f3f3f3}}img{{max-width:100%}}</style></head><body>
<h1>{e(graph.name or "graph")}</h1>
<p>{len(graph.nodes)} nodes, {_calls(graph).replace("calls", "LLM calls")}, width {graph.width}, depth {graph.depth}, sink <code>{e(graph.sink)}</code>.</p>
<img alt="graph {e(graph.name)}" src="data:image/png;base64,{b64}">
{cond_note}
<table><thead><tr><th>node</th><th>role</th><th>model</th><th>label</th><th>size</th><th>inputs</th><th>condition</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
<h2>Spec</h2><pre>{e(graph.to_yaml())}</pre>
</body></html>
"""
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out


def draw(graph: Graph, out: str | Path, pool: Pool | None = None) -> DrawResult:
    """Write ``<out>.png`` and ``<out>.html`` (``out`` may carry either suffix or none)."""
    stem = Path(out)
    if stem.suffix.lower() in (".png", ".html", ".htm"):
        stem = stem.with_suffix("")
    png = draw_png(graph, stem.with_name(stem.name + ".png"), pool)
    page = draw_html(graph, stem.with_name(stem.name + ".html"), png, pool)
    return DrawResult(png=png, html=page)
