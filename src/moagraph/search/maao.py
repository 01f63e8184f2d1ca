"""MaAO baseline: model-aware, agent-based optimisation of the model mix.

Named after the "MaAO" baseline of the Agent-REINFORCE paper (Wang et al. 2025,
FairyFali/AgentRE). Neither the MaAO paper nor its code could be consulted when
this was written, so this is moagraph's small reading of the name, not a
reproduction: it optimises *which models, how many copies* (the dimension
Insight 1 of the paper says matters most) with explicit per-model knowledge,
where Agent-REINFORCE edits a graph distribution.

1. profile: every model is scored once, packed into as few flat graphs as fit
   the budget (as ``pilot="coverage"``); each model's own train accuracy comes
   from the evaluator's node scores (:attr:`EvalResult.node_scores`).
2. search: a model-aware surrogate predicts a mix's reward as the
   count-weighted mean of per-model values, initialised to the profile and
   corrected after every evaluation by the reward error, shared over the mix's
   models by their share of its copies (a delta rule, rate ``lr``). Each step the
   agent, shown the profile, the evaluated mixes with their rewards and the
   unevaluated feasible mixes (all of them, not only budget-filling ones) ranked
   by the surrogate, names the next mix; with
   no agent, or a reply that names none, the surrogate's best mix is taken.
   The graph of a mix is flat on a flat space, else sampled with exactly that
   mix (edges and roles uniform).

Replay-only runs use ``agent=None`` (the surrogate alone), which needs no LLM.
"""

from __future__ import annotations

from typing import Any

from moagraph.errors import ConfigError
from moagraph.graph.spec import Graph
from moagraph.search.agent import AgentLLM, mix_prompt, parse_mix_reply
from moagraph.search.agent_reinforce import coverage_groups
from moagraph.search.base import Optimizer, Told
from moagraph.search.distribution import GraphDistribution
from moagraph.search.space import SearchSpace


class MaAO(Optimizer):
    name = "maao"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        agent: AgentLLM | None = None,
        task_kind: str | None = None,
        lr: float = 0.5,
        max_mixes_shown: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(space, seed, **kwargs)
        if not 0 < lr <= 1:
            raise ConfigError(f"lr={lr}: use 0 < lr <= 1 (MaAO's surrogate learning rate)")
        self.agent = agent
        self.task_kind = task_kind
        self.lr = lr
        self.max_mixes_shown = max_mixes_shown
        self.value: dict[str, float] = {}  # per-model value of the surrogate
        self.profile: dict[str, float] = {}  # per-model own train accuracy (profile phase)
        self.evaluated: dict[tuple[int, ...], float] = {}
        # every feasible mix, not only the budget-filling ones Agent-REINFORCE offers: with a
        # vote sink, a weak extra model can outvote a strong one, so "fill the budget" can hurt
        self._mixes = space.feasible_mixes(maximal=False)
        self.counters = {"agent_calls": 0, "agent_picks": 0, "agent_errors": 0}
        groups = coverage_groups(space)
        self._queue: list[tuple[Graph, str, dict[str, Any]]] = [
            (
                space.flat_graph([int(m in g) for m in space.model_names], name=f"profile-{i}"),
                "pilot",
                {"models": g},
            )
            for i, g in enumerate(groups)
        ]
        self.planned_prior_evaluations = len(self._queue)

    # --- the surrogate ------------------------------------------------------------------
    def predict(self, mix: tuple[int, ...]) -> float:
        """Count-weighted mean of the mix's per-model values (unknown models: 0)."""
        names = self.space.model_names
        tot = sum(mix)
        if not tot:
            return 0.0
        return sum(c * self.value.get(names[i], 0.0) for i, c in enumerate(mix)) / tot

    def _learn(self, mix: tuple[int, ...], reward: float) -> None:
        err = reward - self.predict(mix)
        tot = sum(mix)
        for i, c in enumerate(mix):
            if c:
                m = self.space.model_names[i]
                self.value[m] = self.value.get(m, 0.0) + self.lr * err * c / tot

    def ranked(self) -> list[tuple[int, ...]]:
        """Unevaluated feasible mixes, best predicted first (ties: enumeration order)."""
        todo = [m for m in self._mixes if m not in self.evaluated]
        return sorted(todo, key=lambda m: -self.predict(m))

    # --- ask / tell ---------------------------------------------------------------------
    async def _propose(self) -> tuple[Graph, str, dict[str, Any]]:
        if self._queue:
            return self._queue.pop(0)
        ranked = self.ranked()
        if not ranked:  # every mix tried: resample graphs of the best mix
            ranked = sorted(self.evaluated, key=lambda m: -self.evaluated[m])[:1]
        shown = ranked[: self.max_mixes_shown]
        pick = 0
        if self.agent is not None and len(shown) > 1:
            pick = await self._ask_agent(shown)
        mix = shown[pick]
        return self._graph(mix), "search", {"mix": list(mix), "predicted": self.predict(mix)}

    def _graph(self, mix: tuple[int, ...]) -> Graph:
        if self.space.flat:
            return self.space.flat_graph(mix)
        d = GraphDistribution(self.space)
        d.fix_mix(mix)
        g = d.sample(self.rng)
        for _ in range(10):
            if not self.seen(g):
                break
            g = d.sample(self.rng)
        return g

    async def _ask_agent(self, shown: list[tuple[int, ...]]) -> int:
        sp = self.space
        tried = sorted(self.evaluated.items(), key=lambda kv: -kv[1])[:10]
        profile = [(m, r) for m, r in sorted(self.profile.items(), key=lambda kv: -kv[1])]
        profile += [(f"tried {sp.describe_mix(m)}", r) for m, r in tried]
        prompt = mix_prompt(
            task_kind=self.task_kind,
            mixes=[f"{sp.describe_mix(m)} (predicted {self.predict(m):.3f})" for m in shown],
            pilot=profile,
            insights=None,
            k=1,
        )
        self.counters["agent_calls"] += 1
        assert self.agent is not None
        try:
            text = await self.agent(prompt, 0)
        except Exception:
            self.counters["agent_errors"] += 1
            return 0
        chosen = parse_mix_reply(text or "", len(shown))
        if not chosen:
            return 0
        self.counters["agent_picks"] += 1
        return chosen[0]

    async def _observe(self, told: Told) -> None:
        g = told.candidate.graph
        if told.candidate.phase == "pilot":
            node_scores = told.info.get("node_scores") or {}
            for n in self.space.workers(g):
                if n.model:
                    self.profile[n.model] = float(node_scores.get(n.id, told.reward))
            self.value.update(self.profile)
            return
        mix = self.space.mix_of(g)
        self._learn(mix, told.reward)
        self.evaluated[mix] = max(told.reward, self.evaluated.get(mix, float("-inf")))

    def snapshot(self) -> dict[str, Any]:
        return {"values": {m: round(v, 4) for m, v in self.value.items()}}

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "mixes_evaluated": len(self.evaluated)}
