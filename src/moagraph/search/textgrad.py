"""TextGrad-style baseline: the same agent loop with no insights, priors or pretest.

It starts from the uniform distribution and only sees graphs, rewards and
probabilities, which isolates what the insights and the mix pretest add.
Its model mix stays free (the official TextGrad baseline fixes one random
budget-filling mix instead: ``model_initialize_textgrad`` in FairyFali/AgentRE
``experiments/evaluator/llm_optimizer.py``).
"""

from __future__ import annotations

from moagraph.search.agent_reinforce import AgentReinforce


class TextGrad(AgentReinforce):
    name = "textgrad"
    use_insights = False
    use_priors = False
    fixes_mix = False
