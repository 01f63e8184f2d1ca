"""Agent-REINFORCE: an LLM agent edits the graph distribution from rewards.

Phases (each evaluation is one ask/tell; the phase is stored with every trial):

``pilot`` and ``mixes`` default to ``"auto"`` (:func:`auto_pilot_mixes`): the paper's
``size``/``maximal`` when graphs end in a charged LLM output node, ``coverage``/``all``
when the sink is a free vote (replay-only pools), where the paper's rule loses.

1. pilot (``pilot="size"``, the paper's): the homogeneous, budget-filling mix
   of each of up to ``pilot_n`` models spread over sizes (smallest, largest,
   then the next-smallest ...), so the agent sees how each model does alone.
   Spreading over sizes can miss the pool's best model (zeroeval-math: the
   smallest, largest and second-smallest of 10, never Qwen2.5-7B).
   ``pilot="coverage"`` instead packs *every* model into as few flat pilot
   graphs as fit the budget (one copy each, first-fit by cost) and reads each
   model's own train accuracy from the node scores the evaluator reports
   (:attr:`EvalResult.node_scores`; the exact replay evaluator measures them at
   no extra cost, elsewhere each model gets its graph's reward). No test or
   validation label is used; it takes ``ceil(models / models per graph)``
   evaluations, e.g. 3 for 10 models at 4 nodes;
2. mix choice: the agent reads the feasible mixes, the written insights and
   the pilot results and names ``n_candidates`` mixes (heuristic fallback).
   Only budget-filling mixes are offered (``mixes="maximal"``, "use the budget
   as fully as possible"); ``mixes="all"`` offers every feasible mix, which
   matters with a vote sink, where weak extra voters outvote a strong model;
3. pretest: one sampled graph per candidate mix; the best mix is then
   **fixed** (``fix_mix=True``, the default): every later graph uses exactly
   that many copies of each model, as the official code does
   (FairyFali/AgentRE ``experiments/evaluator/evaluator.py``,
   ``optimize_llm_swarm``: ``model_selection = best_sel`` after
   ``model_pretest_initialize``; ``llm_optimizer.py`` rule R-1 "Model counts
   must exactly match model_selection"). Model entries in later agent replies
   are ignored and proposed graphs are re-projected onto the mix;
4. guided: ``guided_iterations`` agent-guided evaluations ("search": sampled
   from the distribution, "proposal": the agent's graph). The agent gets
   graph + reward (+ latency with ``objective="latency"``, the paper's
   latency prompt) + probabilities + recent history and returns new
   probabilities and a graph as JSON (schema-constrained for agents that
   accept a schema, with a reply limit sized to the schema). A reply that
   cannot be parsed is retried once, then a REINFORCE step is taken instead:
   the search never crashes.

The study returns the best graph by validation re-evaluation, not the last one
(the official code returns the last graph).

Conditional spaces (``space.stages > 1``, moagraph's extension): a mix feasible when its
cheapest model fits the budget; each pretest graph is the insight's cascade (the mix's
best pilot model in the last stage, the others in stage 0, escalating on any
disagreement); the agent's updates then move nodes between stages and change the
escalation thresholds, seeing each graph's expected cost and escalation rate.
``updates=False`` is the ablation that keeps pilot + mix choice and samples later
graphs from the unchanged distribution.
"""

from __future__ import annotations

from typing import Any

from moagraph.errors import ConfigError
from moagraph.graph.spec import Graph, Node, Role
from moagraph.search.agent import (
    AgentLLM,
    mix_prompt,
    mix_schema,
    parse_mix_reply,
    parse_update_reply,
    reply_token_limit,
    update_prompt,
    update_schema,
)
from moagraph.search.base import Optimizer, Told
from moagraph.search.distribution import GraphDistribution
from moagraph.search.insights import insights_text
from moagraph.search.reinforce import Adam, reinforce_grads
from moagraph.search.space import SearchSpace, finalize_graph, graph_text

PILOT_MODES = ("size", "coverage")
"""``AgentReinforce(pilot=...)``: which models the pilot runs (see the module docs)."""

PRETEST_MODES = ("cascade", "sample")
"""``AgentReinforce(pretest=...)`` in conditional spaces: each candidate mix's pretest graph is
the insight's cascade (``"cascade"``, moagraph's default) or one sample of the distribution
(``"sample"``, as the official code draws every pretest graph; escalation is then left to the
updates to find)."""

MIX_MODES = ("maximal", "all")
"""``AgentReinforce(mixes=...)``: which mixes the agent is offered (see the module docs)."""


def auto_pilot_mixes(sink_mode: str) -> tuple[str, str]:
    """``pilot="auto"`` / ``mixes="auto"``: the paper's ``size``/``maximal`` when graphs end in
    an LLM output node; ``coverage``/``all`` with a free vote sink (replay-only pools).

    Why: the official rule "use the budget as fully as possible" assumes an output node
    that can ignore weak inputs; a majority vote cannot, so a budget-filling mix of weak
    voters outvotes the pool's best model (zeroeval-math, paper:8: 0.20 vs 0.43 on test).
    Scoring every model in the pilot costs nothing extra on an exact replay pool.
    """
    return ("size", "maximal") if sink_mode == "llm" else ("coverage", "all")


GUIDED_PHASES = ("search", "proposal")
"""Trial phases that are agent-guided evaluations (pilot and pretest are not)."""


class AgentReinforce(Optimizer):
    name = "agent-reinforce"
    use_insights = True
    use_priors = True  # pilot + mix choice + pretest
    fixes_mix = (
        True  # the pretest's best mix is fixed (official code); TextGrad here leaves it free
    )

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
        guided_iterations: int | None = None,
        objective: str = "accuracy",
        fix_mix: bool | None = None,
        pilot: str = "auto",
        mixes: str = "auto",
        updates: bool = True,
        pretest: str = "cascade",
        **kwargs: Any,
    ) -> None:
        super().__init__(space, seed, **kwargs)
        self.updates = updates
        if pretest not in PRETEST_MODES:
            raise ConfigError(f"pretest={pretest!r}: use one of {', '.join(PRETEST_MODES)}")
        self.pretest = pretest
        auto_pilot, auto_mixes = auto_pilot_mixes(space.sink_mode)
        mixes = auto_mixes if mixes == "auto" else mixes
        if mixes not in MIX_MODES:
            raise ConfigError(
                f"mixes={mixes!r}: use 'maximal' (budget-filling mixes only, the paper's "
                "choice), 'all' (every feasible mix) or 'auto' (--mixes)"
            )
        self.mixes = mixes
        pilot = auto_pilot if pilot == "auto" else pilot
        if pilot not in PILOT_MODES:
            raise ConfigError(
                f"pilot={pilot!r}: use one of {', '.join(PILOT_MODES)} or 'auto' (--pilot); 'size' "
                "runs pilot_n models alone spread over sizes, 'coverage' scores every model"
            )
        self.pilot = pilot
        if objective not in ("accuracy", "latency"):
            raise ValueError(f"objective={objective!r}: use 'accuracy' or 'latency'")
        if guided_iterations is not None and guided_iterations < 1:
            raise ValueError(f"guided_iterations={guided_iterations}: use >= 1")
        self.guided_iterations = guided_iterations
        self.objective = objective
        self.fix_mix = self.fixes_mix if fix_mix is None else fix_mix
        self.fixed_mix: tuple[int, ...] | None = None
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
            "mix_changes_ignored": 0,
            "pilot_evaluations": 0,
            "pretest_evaluations": 0,
            "guided_evaluations": 0,
        }
        self.reply_limits: list[int] = []
        self._queue: list[tuple[Graph, str, dict[str, Any]]] = []
        self._phase = "pilot" if self.use_priors else "search"
        self._pilot: dict[str, float] = {}
        self._pretest: dict[tuple[int, ...], float] = {}
        self._candidates: list[tuple[int, ...]] = []
        if self.use_priors and pilot == "coverage":
            for i, group in enumerate(self._coverage_groups()):
                cover = [int(m in group) for m in space.model_names]
                self._queue.append(
                    (space.flat_graph(cover, name=f"pilot-{i}"), "pilot", {"models": group})
                )
        elif self.use_priors:
            for name in self._pilot_models(pilot_n):
                counts = self._homogeneous(name)
                if counts is not None:
                    self._queue.append(
                        (space.flat_graph(counts, name=f"pilot-{name}"), "pilot", {"model": name})
                    )
        if self.use_priors and not self._queue:
            self._phase = "search"
        self._offered: list[tuple[int, ...]] | None = None
        n_pretest = 0
        if self.use_priors:  # one pretest per candidate mix, and there may be fewer mixes
            n_pretest = min(n_candidates, len(self._offered_mixes()))
        self.planned_prior_evaluations = len(self._queue) + n_pretest

    @property
    def finished(self) -> bool:
        return (
            self.guided_iterations is not None
            and self.counters["guided_evaluations"] >= self.guided_iterations
        )

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

    def _coverage_groups(self) -> list[list[str]]:
        return coverage_groups(self.space)

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
        """Heuristic fallback score: count-weighted pilot reward + a small diversity bonus
        (conditional spaces: the best model's reward, which escalation can reach, plus a
        quarter of the others')."""
        names = self.space.model_names
        known = [(c, self._pilot.get(names[i], 0.0)) for i, c in enumerate(mix) if c]
        if self.space.conditional and known:
            rs = sorted((r for c, r in known for _ in range(c)), reverse=True)
            rest = rs[1:]
            return rs[0] + 0.25 * (sum(rest) / len(rest) if rest else 0.0) + 0.01 * len(known)
        tot = sum(c for c, _ in known)
        mean = sum(c * r for c, r in known) / max(tot, 1)
        return mean + 0.01 * len(known)

    def _offered_mixes(self) -> list[tuple[int, ...]]:
        """The mixes the mix choice may pick from (enumerated once)."""
        if self._offered is None:
            self._offered = self.space.feasible_mixes(maximal=self.mixes == "maximal")
        return self._offered

    async def _choose_mixes(self) -> None:
        mixes = list(self._offered_mixes())
        mixes.sort(key=self._mix_prior, reverse=True)
        shown = mixes[: self.max_mixes_shown]
        chosen: list[int] = []
        if self.agent is not None and len(shown) > 1:
            prompt = mix_prompt(
                task_kind=self.task_kind,
                mixes=[self.space.describe_mix(m) for m in shown],
                pilot=[(m, r) for m, r in self._pilot.items()],
                insights=insights_text(self.task_kind, self.space.sink_mode, self.space.conditional)
                if self.use_insights
                else None,
                k=self.n_candidates,
            )
            sch = (
                mix_schema(len(shown), self.n_candidates)
                if getattr(self.agent, "accepts_schema", False)
                else None
            )
            text = await self._call_agent(prompt, 0, schema=sch)
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
            # the pretest graph of a mix has exactly that mix (fix_mix, not a 0.95 focus that
            # may sample another mix and credit its reward to this one)
            d = GraphDistribution(self.space)
            d.load_state_dict(self.dist.state_dict())
            d.fix_mix(mix)
            if self.space.conditional and self.pretest == "cascade":
                # the insight's cascade: the best pilot model escalated to
                d.focus_stages(self._cascade_stages(mix), strength=0.999)
                g = d.argmax_graph()
            else:
                g = d.sample(self.rng)
            self._queue.append((g, "pretest", {"mix": list(mix)}))

    def _cascade_stages(self, mix: tuple[int, ...]) -> list[int]:
        """Slot stages for a mix (slot s = its s-th copy): the model with the best pilot
        score in the last stage, every other node in stage 0; a mix of under 3 nodes has
        nothing to escalate from and stays in stage 0."""
        names = self.space.model_names
        order = [i for i, c in enumerate(mix) for _ in range(c)]
        if len(order) < 3:
            return [0] * len(order)
        best = max(range(len(order)), key=lambda s: self._pilot.get(names[order[s]], 0.0))
        return [self.space.stages - 1 if s == best else 0 for s in range(len(order))]

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
            if self.fixed_mix is not None:
                g = self.project(g)
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
            # ties: the first candidate in the agent's order (max keeps the first)
            best = max(self._pretest.items(), key=lambda kv: kv[1])[0]
            if self.fix_mix:
                self.dist.fix_mix(best)
                self.fixed_mix = tuple(best)
            else:
                self.dist.focus_mix(best, strength=0.8)
            if self.space.conditional and self.pretest == "cascade":
                self.dist.focus_stages(self._cascade_stages(best), strength=0.7)

    def project(self, g: Graph) -> Graph:
        """Re-project a graph onto the fixed mix: slot i keeps the mix's model for slot i.

        Edges and roles between the mix's slots are kept; nodes outside the mix
        are dropped; missing slots come back as input-less assistants (with the
        latency objective, as in the paper's latency rule R-1, unused models may
        stay unused).
        """
        fm = self.dist.fixed_models
        if fm is None:
            return g
        names = self.space.model_names
        k = len(names)
        n_fixed = int((fm < k).sum())
        kept: dict[int, Node] = {}
        for n in self.space.workers(g):
            i = _slot(n.id)
            if i is None or i >= n_fixed or i in kept:
                continue
            kept[i] = n.model_copy(update={"model": names[int(fm[i])]}, deep=True)
        if self.objective != "latency":
            for i in range(n_fixed):
                if i not in kept:
                    kept[i] = Node(id=f"n{i}", role=Role.ASSISTANT, model=names[int(fm[i])])
        if not kept:
            kept[0] = Node(id="n0", role=Role.ASSISTANT, model=names[int(fm[0])])
        ids = {f"n{i}" for i in kept}
        nodes = []
        for i in sorted(kept):
            n = kept[i]
            n.inputs = [x for x in n.inputs if x in ids and (_slot(x) or 0) < i]
            nodes.append(n)
        sink_inputs = [x for x in g.node(g.sink).inputs if x in ids]
        out = finalize_graph(
            nodes,
            sink_inputs,
            name=g.name,
            sink_mode=self.space.sink_mode,
            output_model=self.space.output_model,
        )
        return self.space.trim(out, keep_nodes=True)

    def _tried_to_change_mix(self, reply: Any) -> bool:
        fm = self.dist.fixed_models
        if fm is None:
            return False
        if isinstance(reply.probabilities, dict) and reply.probabilities.get("models"):
            return True
        if reply.graph is not None:
            names = self.space.model_names
            have = self.space.mix_of(reply.graph)

            def off_mix(node_id: str, model: str | None) -> bool:
                """The node is not the fixed mix's model for its slot (or has no slot)."""
                slot = _slot(node_id)
                if slot is None or slot >= len(fm) or fm[slot] >= len(names):
                    return True
                return names[int(fm[slot])] != model

            return tuple(have) != self.fixed_mix and any(
                off_mix(n.id, n.model) for n in self.space.workers(reply.graph)
            )
        return False

    async def _observe(self, told: Told) -> None:
        phase = told.candidate.phase
        key = {"pilot": "pilot_evaluations", "pretest": "pretest_evaluations"}.get(
            phase, "guided_evaluations"
        )
        self.counters[key] += 1
        if phase == "pilot":
            if "model" in told.candidate.info:  # pilot="size": the model alone
                self._pilot[told.candidate.info["model"]] = told.reward
                return
            # pilot="coverage": each model's own answers, where the evaluator measured them
            node_scores = told.info.get("node_scores") or {}
            for n in self.space.workers(told.candidate.graph):
                if n.model:
                    self._pilot[n.model] = float(node_scores.get(n.id, told.reward))
            return
        if phase == "pretest":
            # credited to the mix actually evaluated (the same as info["mix"], unless a resumed
            # study told a stored graph that differs from this run's proposal)
            self._pretest[self.space.mix_of(told.candidate.graph)] = told.reward
            return
        if self.finished:
            return  # the last guided evaluation: no further graph will be asked for, so no agent call
        if not self.updates:
            return  # the ablation: pilot + mix choice only, later graphs sampled unchanged
        await self._agent_update(told)

    def _reinforce_step(self, told: Told) -> None:
        b = self._baseline if self._baseline is not None else told.reward
        grads = reinforce_grads(self.dist, [(told.candidate.graph, told.reward)], baseline=b)
        self.opt.step(self.dist.params(), grads)

    def _cascade_note(self, told: Told) -> str:
        """Conditional spaces: what stages and thresholds mean, and what the last graph spent."""
        sp = self.space
        if not sp.conditional:
            return ""
        thr = ", ".join(f"{t:g}" for t in sp.thresholds)
        note = (
            f"Stages: each node has a stage 0..{sp.stages - 1} (probabilities `stages`). Stage-0 "
            "nodes always answer; a node of stage s > 0 answers only when the answers of all "
            "earlier stages agree less than `escalate_below` of stage s (choices: "
            f"{thr}; 1 = on any disagreement), so it costs nothing where they agree. The budget "
            "applies to the expected cost per question. Give each graph node a `stage`."
        )
        cost, esc = told.info.get("cost"), told.info.get("escalated")
        if cost is not None:
            note += f" Latest graph: expected cost {float(cost):.3g}"
            if esc is not None:
                note += f", later stages ran on {100 * float(esc):.0f}% of questions"
            over = told.info.get("over_budget")
            note += f" ({over}: over budget, reward < 0)." if over else "."
        return note

    async def _agent_update(self, told: Told) -> None:
        recent = [
            (graph_text(t.candidate.graph), t.reward)
            for t in self.history[-self.history_len - 1 : -1]
        ]
        sp = self.space
        n_nodes = sum(self.fixed_mix) if self.fixed_mix is not None else sp.max_nodes
        budget_note = (
            f"Budget: {sp.budget} normalised FLOPs (one call of the smallest model = 1), "
            f"at most {n_nodes} nodes (n0..n{n_nodes - 1}); "
            f"models: {', '.join(sp.model_names)}."
        )
        sink_note = (
            f"every node without a consumer feeds the output node (model {sp.output_model}), which reads "
            "their answers and writes the final one; its cost counts."
            if sp.sink_mode == "llm"
            else "the sink votes over its inputs."
        )
        selection = None
        if self.fixed_mix is not None:
            fm = self.dist.fixed_models
            assert fm is not None
            selection = ", ".join(
                f"n{i}={sp.model_names[int(m)]}"
                for i, m in enumerate(fm)
                if m < len(sp.model_names)
            )
        prompt = update_prompt(
            task_kind=self.task_kind,
            graph_text=graph_text(told.candidate.graph),
            reward=told.reward,
            probabilities=self.dist.probabilities(),
            history=recent,
            insights=insights_text(self.task_kind, self.space.sink_mode, self.space.conditional)
            if self.use_insights
            else None,
            budget_note=budget_note,
            sink_note=sink_note,
            model_selection=selection,
            latency_s=told.info.get("latency"),
            latency=self.objective == "latency",
            cascade_note=self._cascade_note(told),
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
        if reply is not None and self._tried_to_change_mix(reply):
            self.counters["mix_changes_ignored"] += 1
        if reply is None:
            if self.agent is not None:
                self.counters["parse_failures"] += 1
            self.counters["fallback_steps"] += 1
            self._reinforce_step(told)
        else:
            self.counters["agent_replies_ok"] += 1
            if reply.probabilities:
                self.dist.set_probabilities(
                    reply.probabilities
                )  # model entries ignored when the mix is fixed
            if reply.graph is not None:
                self._proposal = (
                    self.project(reply.graph) if self.fixed_mix is not None else reply.graph
                )
        b = self._baseline
        self._baseline = told.reward if b is None else 0.8 * b + 0.2 * told.reward

    def _update_schema(self) -> dict[str, Any] | None:
        """The reply schema, for agents that declare ``accepts_schema`` (else None)."""
        if not getattr(self.agent, "accepts_schema", False):
            return None
        fixed = sum(self.fixed_mix) if self.fixed_mix is not None else None
        if getattr(self, "_schema_for", -1) != fixed:
            self._schema = update_schema(self.space, fixed_nodes=fixed)
            self._schema_for = fixed
        return self._schema

    async def _call_agent(
        self, prompt: str, attempt: int, schema: dict[str, Any] | None = None
    ) -> str | None:
        self.counters["agent_calls"] += 1
        try:
            if schema is not None:
                limit = reply_token_limit(schema)
                self.reply_limits.append(limit)
                if _takes(self.agent, "max_tokens"):
                    return await self.agent(prompt, attempt, schema=schema, max_tokens=limit)  # type: ignore[misc,call-arg]
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
        snap: dict[str, Any] = {"probabilities": self.dist.probabilities(), "phase": self._phase}
        if self.fixed_mix is not None:
            snap["fixed_mix"] = list(self.fixed_mix)
        return snap

    def stats(self) -> dict[str, Any]:
        s: dict[str, Any] = dict(self.counters)
        if self.use_priors:
            s["pilot"] = self.pilot
            s["pilot_models"] = sorted(self._pilot)
        if self.fixed_mix is not None:
            s["fixed_mix"] = self.space.describe_mix(self.fixed_mix)
        if self.reply_limits:
            s["reply_token_limit"] = max(self.reply_limits)
        updates = s["agent_replies_ok"] + s["parse_failures"]
        s["parse_failure_rate"] = round(s["parse_failures"] / updates, 3) if updates else None
        if s["agent_errors"]:
            s["agent_error"] = getattr(self, "_last_error", "")
        return s


def coverage_groups(space: SearchSpace) -> list[list[str]]:
    """Every model that fits alone, one copy each, packed first-fit (dearest first)
    into as few budget-feasible flat graphs as possible (``pilot="coverage"``, MaAO's profile)."""
    sp = space
    names = sp.model_names
    dear_first = sorted(names, key=lambda m: (-sp.node_cost(m, 0), names.index(m)))
    groups: list[list[int]] = []
    for m in dear_first:
        k = names.index(m)
        if not sp.mix_fits([int(i == k) for i in range(len(names))]):
            continue  # too dear even alone
        for g in groups:
            counts = [int(i in g or i == k) for i in range(len(names))]
            if sp.mix_fits(counts):
                g.append(k)
                break
        else:
            groups.append([k])
    return [[names[i] for i in sorted(g)] for g in groups]


def _slot(node_id: str) -> int | None:
    s = node_id.strip()
    return int(s[1:]) if s.startswith("n") and s[1:].isdigit() else None


def _takes(fn: Any, kw: str) -> bool:
    """Whether a callable accepts keyword ``kw`` (agents written before reply limits do not)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return kw in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
