"""TextGrad-style baseline: the same agent loop with no insights, priors or pretest.

It starts from the uniform distribution and only sees graphs, rewards and
probabilities, which isolates what the insights and the mix pretest add.
"""

from __future__ import annotations

from moagraph.search.agent_reinforce import AgentReinforce


class TextGrad(AgentReinforce):
    name = "textgrad"
    use_insights = False
    use_priors = False
