"""Agent-REINFORCE: an LLM agent edits the graph distribution from rewards.

Phases (each evaluation is one ask/tell):

1. pilot: the homogeneous, budget-filling mix of each of up to ``pilot_n``
   models, so the agent sees how each model does alone;
2. mix choice: the agent reads the feasible mixes, the written insights and
   the pilot results and names ``n_candidates`` mixes (heuristic fallback);
3. pretest: one sampled graph per candidate mix; the best mix seeds the
   distribution's model logits;
4. search: sample (or take the agent's proposed graph), trim, evaluate; the
   agent gets graph + reward + probabilities + recent history and returns
   new probabilities and a graph. A reply that cannot be parsed is retried
   once, then a REINFORCE step is taken instead: the search never crashes.

The study returns the best graph by held-out re-evaluation, not the last one.
"""

from __future__ import annotations

from typing import Any

from moagraph.graph.spec import Graph
from moagraph.search.agent import (
    AgentLLM,
    mix_prompt,
    parse_mix_reply,
    parse_update_reply,
    update_prompt,
    update_schema,
)
from moagraph.search.base import Optimizer, Told
from moagraph.search.distribution import GraphDistribution
from moagraph.search.insights import insights_text
from moagraph.search.reinforce import Adam, reinforce_grads
from moagraph.search.space import SearchSpace, graph_text


class AgentReinforce(Optimizer):
    name = "agent-reinforce"
    use_insights = True
    use_priors = True  # pilot + mix choice + pretest

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        agent: AgentLLM | None = None,
        task_kind: str | None = None,
        pilot_n: int = 3,
        n_candidates: int = 3,
        max_mixes_shown: int = 20,
        history_len: int = 4,
        lr: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(space, seed, **kwargs)
        self.agent = agent
        self.task_kind = task_kind
        self.dist = GraphDistribution(space)
        self.opt = Adam(lr)
        self.history_len = history_len
        self.n_candidates = n_candidates
        self.max_mixes_shown = max_mixes_shown
        self._baseline: float | None = None
        self._proposal: Graph | None = None
        self.counters = {
            "agent_calls": 0,
            "agent_replies_ok": 0,
            "retries": 0,
            "parse_failures": 0,
            "agent_errors": 0,
            "fallback_steps": 0,
            "proposals_used": 0,
            "mix_choice_parsed": 0,
        }
        self._queue: list[tuple[Graph, str, dict[str, Any]]] = []
        self._phase = "pilot" if self.use_priors else "search"
        self._pilot: dict[str, float] = {}
        self._pretest: dict[tuple[int, ...], float] = {}
        self._candidates: list[tuple[int, ...]] = []
        if self.use_priors:
            for name in self._pilot_models(pilot_n):
                counts = self._homogeneous(name)
                if counts is not None:
                    self._queue.append((space.flat_graph(counts, name=f"pilot-{name}"), "pilot", {"model": name}))
            if not self._queue:
                self._phase = "search"

    # --- priors ------------------------------------------------------------------
    def _pilot_models(self, n: int) -> list[str]:
        """Spread over sizes: smallest, largest, then middles."""
        by_size = sorted(self.space.models, key=lambda m: m.n_params)
        picks: list[str] = []
        idx = [0, len(by_size) - 1] + list(range(1, len(by_size) - 1))
        for i in idx:
            if by_size[i].name not in picks:
                picks.append(by_size[i].name)
        return picks[: max(n, 0)]

    def _homogeneous(self, name: str) -> tuple[int, ...] | None:
        k = self.space.model_names.index(name)
        counts = [0] * len(self.space.models)
        best = None
        while True:
            counts[k] += 1
            if not self.space.mix_fits(counts):
                break
            best = tuple(counts)
        return best

    def _mix_prior(self, mix: tuple[int, ...]) -> float:
        """Heuristic fallback score: count-weighted pilot reward + a small diversity bonus."""
        names = self.space.model_names
        known = [(c, self._pilot.get(names[i], 0.0)) for i, c in enumerate(mix) if c]
        tot = sum(c for c, _ in known)
        mean = sum(c * r for c, r in known) / max(tot, 1)
        return mean + 0.01 * len(known)

    async def _choose_mixes(self) -> None:
        mixes = self.space.feasible_mixes(maximal=True)
        mixes.sort(key=self._mix_prior, reverse=True)
        shown = mixes[: self.max_mixes_shown]
        chosen: list[int] = []
        if self.agent is not None and len(shown) > 1:
            prompt = mix_prompt(
                task_kind=self.task_kind,
                mixes=[self.space.describe_mix(m) for m in shown],
                pilot=[(m, r) for m, r in self._pilot.items()],
                insights=insights_text(self.task_kind) if self.use_insights else None,
                k=self.n_candidates,
            )
            text = await self._call_agent(prompt, 0)
            chosen = parse_mix_reply(text or "", len(shown))[: self.n_candidates]
            if chosen:
                self.counters["mix_choice_parsed"] += 1
        for i in range(len(shown)):  # top up with the heuristic ranking
            if len(chosen) >= min(self.n_candidates, len(shown)):
                break
            if i not in chosen:
                chosen.append(i)
        self._candidates = [shown[i] for i in chosen]
        for mix in self._candidates:
            d = GraphDistribution(self.space)
            d.load_state_dict(self.dist.state_dict())
            d.focus_mix(mix)
            g = d.sample(self.rng)
            self._queue.append((g, "pretest", {"mix": list(mix)}))

    # --- ask / tell ------------------------------------------------------------------
    async def _propose(self) -> tuple[Graph, str, dict[str, Any]]:
        if self._phase == "pilot" and not self._queue:
            await self._choose_mixes()
            self._phase = "pretest"
        if self._queue:
            return self._queue.pop(0)
        if self._phase == "pretest":
            self._finish_pretest()
        if self._proposal is not None:
            g, self._proposal = self._proposal, None
            if not self.seen(g):
                self.counters["proposals_used"] += 1
                return g, "proposal", {}
        g = self.dist.sample(self.rng)
        for _ in range(10):
            if not self.seen(g):
                break
            g = self.dist.sample(self.rng)
        return g, "search", {}

    def _finish_pretest(self) -> None:
        self._phase = "search"
        if self._pretest:
            best = max(self._pretest.items(), key=lambda kv: kv[1])[0]
            self.dist.focus_mix(best, strength=0.8)

    async def _observe(self, told: Told) -> None:
        phase = told.candidate.phase
        if phase == "pilot":
            self._pilot[told.candidate.info["model"]] = told.reward
            return
        if phase == "pretest":
            self._pretest[tuple(told.candidate.info["mix"])] = told.reward
            return
        await self._agent_update(told)

    def _reinforce_step(self, told: Told) -> None:
        b = self._baseline if self._baseline is not None else told.reward
        grads = reinforce_grads(self.dist, [(told.candidate.graph, told.reward)], baseline=b)
        self.opt.step(self.dist.params(), grads)

    async def _agent_update(self, told: Told) -> None:
        recent = [
            (graph_text(t.candidate.graph), t.reward)
            for t in self.history[-self.history_len - 1 : -1]
        ]
        budget_note = (
            f"Budget: {self.space.budget} normalised FLOPs (one call of the smallest model = 1), "
            f"at most {self.space.max_nodes} nodes (n0..n{self.space.max_nodes - 1}); "
            f"models: {', '.join(self.space.model_names)}."
        )
        prompt = update_prompt(
            task_kind=self.task_kind,
            graph_text=graph_text(told.candidate.graph),
            reward=told.reward,
            probabilities=self.dist.probabilities(),
            history=recent,
            insights=insights_text(self.task_kind) if self.use_insights else None,
            budget_note=budget_note,
        )
        reply = None
        if self.agent is not None:
            for attempt in range(2):
                if attempt:
                    self.counters["retries"] += 1
                text = await self._call_agent(prompt, attempt, schema=self._update_schema())
                if text is None:
                    continue
                r = parse_update_reply(text, self.space)
                if r.ok:
                    reply = r
                    break
        if reply is None:
            if self.agent is not None:
                self.counters["parse_failures"] += 1
            self.counters["fallback_steps"] += 1
            self._reinforce_step(told)
        else:
            self.counters["agent_replies_ok"] += 1
            if reply.probabilities:
                self.dist.set_probabilities(reply.probabilities)
            if reply.graph is not None:
                self._proposal = reply.graph
        b = self._baseline
        self._baseline = told.reward if b is None else 0.8 * b + 0.2 * told.reward

    def _update_schema(self) -> dict[str, Any] | None:
        """The reply schema, for agents that declare ``accepts_schema`` (else None)."""
        if not getattr(self.agent, "accepts_schema", False):
            return None
        if getattr(self, "_schema", None) is None:
            self._schema = update_schema(self.space)
        return self._schema

    async def _call_agent(self, prompt: str, attempt: int, schema: dict[str, Any] | None = None) -> str | None:
        self.counters["agent_calls"] += 1
        try:
            if schema is not None:
                return await self.agent(prompt, attempt, schema=schema)  # type: ignore[misc,call-arg]
            return await self.agent(prompt, attempt)  # type: ignore[misc]
        except Exception as e:
            self.counters["agent_errors"] += 1
            self._last_error = str(e)
            return None

    # --- reporting -------------------------------------------------------------------
    def final_candidates(self) -> list[Graph]:
        return [self.dist.argmax_graph()]

    def snapshot(self) -> dict[str, Any]:
        return {"probabilities": self.dist.probabilities(), "phase": self._phase}

    def stats(self) -> dict[str, Any]:
        s = dict(self.counters)
        updates = s["agent_replies_ok"] + s["parse_failures"]
        s["parse_failure_rate"] = round(s["parse_failures"] / updates, 3) if updates else None
        return s
