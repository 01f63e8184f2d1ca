"""Search on a hybrid pool: recorded node answers, a live LLM output node that reads them.

The output node's backend is scripted here (orchestration test); the recorded
answers, the grading and the executor are the real ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from moagraph.errors import ConfigError
from moagraph.graph.spec import Graph, Node, Role
from moagraph.graph.testing import ScriptedBackend
from moagraph.models.base import LLMRequest
from moagraph.pools.combine import extend_pool
from moagraph.search import prepare_search
from moagraph.search.agent_reinforce import AgentReinforce
from moagraph.search.evaluator import (
    ExactReplayEvaluator,
    ExecutorEvaluator,
    pool_replay_records,
)

MODELS = ["Qwen2.5-7B-Instruct", "gemma-2-2b-it"]
KW: dict[str, Any] = dict(
    split="zeroeval", budget="paper:4", flat=True, models=MODELS, train_n=4, heldout_n=2, test_n=4
)


def test_llm_sink_on_a_replay_only_pool_names_the_hybrid_fix() -> None:
    with pytest.raises(ConfigError, match="moagraph pool extend"):
        prepare_search("zeroeval-math", "math", optimizer="random", sink="llm", **KW)
    with pytest.raises(ConfigError, match="--output-model: 'nope' is not in pool"):
        prepare_search("zeroeval-math", "math", optimizer="random", output_model="nope", **KW)


def test_hybrid_pool_searches_with_a_charged_live_output_node() -> None:
    hybrid = extend_pool("zeroeval-math", ["local"], models=MODELS)
    setup = prepare_search(
        hybrid, "math", optimizer="agent-reinforce", agent=None, output_model="qwen-coder-1.5b",
        **KW
    )  # fmt: skip
    assert setup.space.sink_mode == "llm" and setup.space.output_model == "qwen-coder-1.5b"
    assert isinstance(setup.evaluator, ExecutorEvaluator)
    assert isinstance(setup.optimizer, AgentReinforce)
    assert (setup.optimizer.pilot, setup.optimizer.mixes) == ("size", "maximal")  # the paper's
    # the same pool without a live output model stays an exact-replay vote search
    plain = prepare_search(hybrid, "math", optimizer="random", **KW)
    assert plain.space.sink_mode == "vote" and isinstance(plain.evaluator, ExactReplayEvaluator)
    voted = prepare_search(
        hybrid, "math", optimizer="random", sink="vote", output_model="qwen-coder-1.5b", **KW
    )  # fmt: skip
    assert voted.space.sink_mode == "vote" and voted.space.output_model is None
    assert any("--output-model qwen-coder-1.5b is unused" in n for n in voted.notes)


def test_the_output_node_reads_the_recorded_answers() -> None:
    """Graph: Qwen2.5-7B (recorded) -> output node that repeats the recorded answer it read.

    Its train scores must equal Qwen2.5-7B's own recorded scores on the same questions."""
    hybrid = extend_pool("zeroeval-math", ["local"], models=MODELS)
    setup = prepare_search(
        hybrid, "math", optimizer="random", output_model="qwen-coder-1.5b", **KW
    )  # fmt: skip
    recorded = {
        r["query_id"]: r["text"] for r in pool_replay_records(hybrid, ["Qwen2.5-7B-Instruct"])
    }
    read: list[bool] = []

    def repeat_recorded(req: LLMRequest) -> str:
        prompt = "\n".join(m["content"] for m in req.messages)
        seen = [text for text in recorded.values() if text[-60:] in prompt]
        read.append(len(seen) == 1)
        return seen[0] if seen else "no recorded answer in the prompt"

    runtime = setup.runtimes[0]
    runtime._backends["qwen-coder-1.5b"] = ScriptedBackend(respond=repeat_recorded)
    first = Node(id="n0", model="Qwen2.5-7B-Instruct", role=Role.ASSISTANT)
    g = Graph(nodes=[first, Node(id="out", model="qwen-coder-1.5b", inputs=["n0"])], sink="out")

    async def go() -> tuple[Any, Any]:
        try:
            through = await setup.evaluator.evaluate(g, "train")
            alone = await setup.evaluator.evaluate(Graph(nodes=[first], sink="n0"), "train")
            return through, alone
        finally:
            await setup.aclose()

    through, alone = asyncio.run(go())
    assert read == [True] * KW["train_n"]  # one live call per question, holding the recorded answer
    assert through.scores == alone.scores and 0 < sum(alone.scores) < len(alone.scores)
    assert through.cost > alone.cost  # the output node is charged
