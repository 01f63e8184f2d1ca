"""TextGrad-style baseline: the same agent loop with no insights, priors or pretest.

It starts from the uniform distribution and only sees graphs, rewards and
probabilities, which isolates what the insights and the mix pretest add.

Its model mix is, as in the official baseline, **one random mix fixed at the
start** (``mix="random"``, the default: ``model_initialize_textgrad`` in
FairyFali/AgentRE ``experiments/evaluator/llm_optimizer.py`` draws one of the
budget-filling combinations). It is drawn from the same mixes Agent-REINFORCE
offers (``mixes``: budget-filling with an LLM output node, every feasible mix
with a vote sink). ``mix="free"`` lets the agent choose the models too
(moagraph's earlier baseline); its replies then carry a model distribution per
node, about ten times longer (one measured: 1,373 tokens in 422 s, against 138 tokens
and 47 s on average with the mix fixed).
"""

from __future__ import annotations

from typing import Any

from moagraph.errors import ConfigError
from moagraph.search.agent_reinforce import AgentReinforce
from moagraph.search.space import SearchSpace


class TextGrad(AgentReinforce):
    name = "textgrad"
    use_insights = False
    use_priors = False
    fixes_mix = False

    def __init__(self, space: SearchSpace, seed: int = 0, mix: str = "random", **kwargs: Any):
        super().__init__(space, seed, **kwargs)
        if mix not in ("random", "free"):
            raise ConfigError(
                f"mix={mix!r}: use 'random' (one random mix fixed at the start, the official "
                "baseline) or 'free' (the agent also picks the models)"
            )
        self.mix = mix
        if mix == "random":
            mixes = self._offered_mixes()
            if mixes:
                chosen = tuple(mixes[int(self.rng.integers(len(mixes)))])
                self.dist.fix_mix(chosen)
                self.fixed_mix = chosen

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "mix": self.mix}
