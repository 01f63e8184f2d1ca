"""Drawing: layered layout, PNG and standalone HTML."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg

from moagraph.graph import builders
from moagraph.graph.draw import draw, layout
from moagraph.graph.testing import fake_pool


def test_layout_is_layered_left_to_right() -> None:
    g = builders.moa([["m1", "m2", "m3"], ["m1"]], "m2")
    pos = layout(g)
    assert {pos[f"l0_{i}"][0] for i in range(3)} == {0.0}
    assert pos["l1_0"][0] == 1.0 and pos["agg"][0] == 2.0
    assert sorted(pos[f"l0_{i}"][1] for i in range(3)) == [-1.0, 0.0, 1.0]
    for n in g.nodes:  # every edge points right
        for src in n.inputs:
            assert pos[src][0] < pos[n.id][0]


def test_png_and_html(tmp_path: Path) -> None:
    pool = fake_pool("m1", "m2", "m3")
    g = builders.random_dag(["m1", "m2", "m3"], 7, 0.4, 5)
    res = draw(g, tmp_path / "out.png", pool)  # suffix is replaced by .png / .html
    img = mpimg.imread(res.png)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.05  # not a blank canvas
    page = res.html.read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page and 'src="http' not in page
    for n in g.nodes:
        assert f"<td>{n.id}" in page
    assert f"width {g.width}, depth {g.depth}" in page


# --- conditional graphs (issue 20) ------------------------------------------------


def test_condition_edges_dashed_and_labelled(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from moagraph.graph.draw import CONDITION_EDGE, INPUT_EDGE, draw_png, edge_styles

    g = builders.cascade(["m1", "m2"], [["m3"], ["m4"]], threshold=0.5)
    styles = {(e.src, e.dst): e for e in edge_styles(g)}
    assert set(styles) == set(g.to_networkx().edges)
    for (_src, dst), e in styles.items():
        if dst == "vote":
            assert e.kind == "input" and e.linestyle == "solid" and e.label == ""
        else:
            assert e.kind == "condition" and e.linestyle == "dashed"
            assert e.color == CONDITION_EDGE["color"] != INPUT_EDGE["color"]
    assert {e.dst: e.label for e in styles.values() if e.label} == {
        "s1_0": "agree<0.5",
        "s2_0": "agree<0.5",
    }
    # layout orders by condition edges too: each stage its own column
    pos = layout(g)
    assert pos["s0_0"][0] == 0.0 and pos["s1_0"][0] == 1.0 and pos["s2_0"][0] == 2.0
    assert pos["vote"][0] == 3.0

    # the artists really drawn: one arrow per edge, dashed exactly for condition edges
    seen: dict[str, str] = {}
    orig = plt.close
    try:
        plt.close = lambda fig=None: None  # type: ignore[assignment]  # keep the figure to inspect
        draw_png(g, tmp_path / "c.png")
        fig = plt.gcf()
    finally:
        plt.close = orig  # type: ignore[assignment]
    for ann in fig.axes[0].texts:
        gid = ann.get_gid()
        if gid and gid.startswith("edge:") and ann.arrow_patch is not None:
            seen[gid] = ann.arrow_patch.get_linestyle()
    plt.close(fig)
    assert len(seen) == len(styles)
    for gid, ls in seen.items():
        want = ("--", "dashed") if gid.startswith("edge:condition:") else ("-", "solid")
        assert ls in want, gid
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("if agree<0.5") == 2
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_conditional_html_says_which_nodes_and_on_what(tmp_path: Path) -> None:
    pool = fake_pool("m1", "m2", "m3")
    g = builders.cascade(["m1", "m2"], ["m3"])
    res = draw(g, tmp_path / "casc", pool)
    img = mpimg.imread(res.png)
    assert img.shape[0] > 100 and img[..., :3].std() > 0.05
    page = res.html.read_text()
    assert "<th>condition</th>" in page
    assert "runs if s0_0, s0_1 disagree" in page  # the node table row of s1_0
    assert "<code>s1_0</code> runs only if s0_0, s0_1 disagree" in page
    assert "dashed" in page and page.count("<td>always</td>") == 3  # s0_0, s0_1, vote
    assert "2-3 LLM calls" in page


def test_plain_graph_draws_without_condition_legend(tmp_path: Path) -> None:
    from moagraph.graph.draw import edge_styles

    g = builders.parallel_vote(["m1", "m2"])
    assert all(e.kind == "input" and e.linestyle == "solid" for e in edge_styles(g))
    page = draw(g, tmp_path / "v").html.read_text()
    assert "Conditional graph" not in page


def test_condition_on_an_input_is_labelled_on_the_input_edge() -> None:
    from moagraph.graph.draw import edge_styles
    from moagraph.graph.spec import Condition, Graph, Node

    g = Graph(
        name="refine-if-disagree",
        nodes=[
            Node(id="a", model="m1"),
            Node(id="b", model="m2"),
            Node(id="r", model="m3", inputs=["a", "b"], condition=Condition(among=["a", "b"])),
        ],
        sink="r",
    )
    es = edge_styles(g)
    assert all(e.kind == "input" for e in es)  # the condition adds no edge here
    assert [e.label for e in es if e.label] == ["disagree"]
