"""Graph validation rules, serialisation and shape metrics."""

from __future__ import annotations

import json

import pytest

from moagraph.graph.spec import Graph, GraphError, Node, Role
from moagraph.graph.testing import fake_pool


def g(*nodes: Node, sink: str) -> Graph:
    return Graph(name="t", nodes=list(nodes), sink=sink)


A = Role.ASSISTANT


@pytest.mark.parametrize(
    ("graph", "words"),
    [
        (g(Node(id="a", model="m1"), Node(id="a", model="m1"), sink="a"), ["'a'", "unique ids"]),
        (
            g(Node(id="a", model="m1", inputs=["ghost"]), sink="a"),
            ["'a'", "'ghost'", "existing nodes"],
        ),
        (g(Node(id="a", model="m1"), sink="zzz"), ["'zzz'", "sink must exist"]),
        (
            g(
                Node(id="a", model="m1", inputs=["c"]),
                Node(id="b", model="m1", inputs=["a"]),
                Node(id="c", model="m1", inputs=["b"]),
                Node(id="s", model="m1", inputs=["c"]),
                sink="s",
            ),
            ["cycle", "acyclic", "a", "b", "c"],
        ),
        (
            g(Node(id="a", model="m1"), Node(id="lost", model="m1"), sink="a"),
            ["'lost'", "never reach the sink"],
        ),
        (g(Node(id="a"), sink="a"), ["'a'", "LLM roles need a model"]),
        (
            g(
                Node(id="a", model="m1"),
                Node(id="v", role=Role.VOTE, model="m1", inputs=["a"]),
                sink="v",
            ),
            ["'v'", "vote uses no model"],
        ),
        (g(Node(id="v", role=Role.VOTE), sink="v"), ["'v'", "vote needs >= 1 input"]),
        (
            g(Node(id="x", role=Role.AGGREGATOR, model="m1"), sink="x"),
            ["'x'", "aggregator needs >= 1 input"],
        ),
        (
            g(
                Node(id="a", model="m1"),
                Node(id="f", role=Role.FUSER, model="m1", inputs=["a"]),
                Node(id="f2", role=Role.FUSER, model="m1", inputs=["f"]),
                sink="f2",
            ),
            ["'f2'", "fuser needs >= 1 assistant input"],
        ),
        (
            g(
                Node(id="a", model="m1"),
                Node(id="f", role=Role.FUSER, model="m1", inputs=["a"]),
                Node(id="agg", role=Role.AGGREGATOR, model="m1", inputs=["f", "a"]),
                sink="agg",
            ),
            ["'agg'", "'f'", "fed by a fuser must be an assistant"],
        ),
    ],
)
def test_each_rule_names_node_and_rule(graph: Graph, words: list[str]) -> None:
    with pytest.raises(GraphError) as err:
        graph.validate_structure()
    for w in words:
        assert w in str(err.value)


def test_unknown_model_lists_known_models() -> None:
    graph = g(Node(id="a", model="gpt-9"), sink="a")
    graph.validate_structure()  # structurally fine
    with pytest.raises(GraphError) as err:
        graph.validate_against(fake_pool("m1", "m2"))
    msg = str(err.value)
    assert "'a'" in msg and "'gpt-9'" in msg and "m1, m2" in msg


def test_valid_fuser_graph_and_graph_error_is_value_error() -> None:
    graph = g(
        Node(id="a", model="m1"),
        Node(id="b", model="m2"),
        Node(id="f", role=Role.FUSER, model="m1", inputs=["a", "b"]),
        Node(id="out", model="m2", inputs=["f"]),
        sink="out",
    )
    assert graph.validate_against(fake_pool("m1", "m2")) is graph
    assert issubclass(GraphError, ValueError)


def test_yaml_and_json_round_trip(tmp_path) -> None:
    graph = g(
        Node(id="a", model="m1", temperature=0.7),
        Node(id="b", model="m2", sample_index=3),
        Node(id="v", role=Role.VOTE, inputs=["a", "b"]),
        sink="v",
    )
    for name in ("g.yaml", "g.json"):
        p = graph.save(tmp_path / name)
        back = Graph.load(p)
        assert back == graph
    assert json.loads((tmp_path / "g.json").read_text())["sink"] == "v"
    assert Graph.from_yaml(graph.to_yaml()) == graph


def test_load_rejects_invalid_file(tmp_path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("nodes:\n  - {id: a, model: m1, inputs: [b]}\nsink: a\n")
    with pytest.raises(GraphError, match="'b'"):
        Graph.load(p)
    p.write_text("nodes: [a: b: c\n")
    with pytest.raises(GraphError, match="not valid YAML"):
        Graph.load(p)
    with pytest.raises(GraphError, match="does not exist"):
        Graph.load(tmp_path / "missing.yaml")


def test_width_and_depth() -> None:
    diamond = g(
        Node(id="a", model="m1"),
        Node(id="b", model="m1", inputs=["a"]),
        Node(id="c", model="m1", inputs=["a"]),
        Node(id="d", model="m1", inputs=["a"]),
        Node(id="v", role=Role.VOTE, inputs=["b", "c", "d"]),
        sink="v",
    )
    assert diamond.width == 3
    assert diamond.depth == 2  # vote nodes make no call
    skewed = g(
        Node(id="a", model="m1"),
        Node(id="b", model="m1", inputs=["a"]),
        Node(id="c", model="m1", inputs=["b"]),
        Node(id="x", model="m1"),
        Node(id="s", role=Role.AGGREGATOR, model="m1", inputs=["c", "x"]),
        sink="s",
    )
    assert skewed.depth == 4
    assert skewed.width == 2  # generation 0 = {a, x}
    assert skewed.topological_order()[:2] == ["a", "b"]  # listed order breaks ties
