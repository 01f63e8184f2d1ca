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
