"""Routing helpers shared by the live routers and the replay evaluation: the documented
latency model (recordings carry no latency) and the score ranking with a cheaper-first
tie band."""

from __future__ import annotations

from moagraph.models.cost import call_dollars, node_flops
from moagraph.models.pool import ModelSpec, Pool

__all__ = ["model_latency_s", "rank_models"]

# --- latency model (documented assumption; recordings carry no latency) ------------------
PREFILL_S_PER_TOKEN_PER_B = 2e-5  # prefill: 20 us per prompt token per billion params
DECODE_S_PER_TOKEN = 5e-3  # decode: 5 ms per output token fixed overhead ...
DECODE_S_PER_TOKEN_PER_B = 5e-4  # ... plus 0.5 ms per output token per billion params


def model_latency_s(spec: ModelSpec, prompt_tokens: float, completion_tokens: float) -> float:
    """Latency model: proportional to params x tokens (prefill and decode rates above).

    A spec may override with ``extra.latency_s_per_token`` (measured decode seconds per
    output token), which the tie-breaker and the replay evaluation then use instead.
    """
    per_tok = spec.extra.get("latency_s_per_token") if spec.extra else None
    if per_tok is not None:
        return float(per_tok) * completion_tokens
    return prompt_tokens * spec.params_b * PREFILL_S_PER_TOKEN_PER_B + completion_tokens * (
        DECODE_S_PER_TOKEN + spec.params_b * DECODE_S_PER_TOKEN_PER_B
    )


def rank_models(
    scores: dict[str, float],
    pool: Pool,
    margin: float,
    avg_in: float,
    avg_out: float,
    cost_key: str = "flops",
) -> list[str]:
    """Models best first; within ``margin`` of the best remaining score, cheaper first
    (FLOPs, or dollars with ``cost_key='dollars'``), then lower latency, then name."""

    def cost(m: str) -> tuple[float, float, str]:
        spec = pool[m]
        c = (
            call_dollars(spec, avg_in, avg_out)
            if cost_key == "dollars"
            else node_flops(spec, 0, avg_in, avg_out)
        )
        return (c, model_latency_s(spec, avg_in, avg_out), m)

    remaining = sorted(scores, key=lambda m: (-scores[m], m))
    out: list[str] = []
    while remaining:
        best = scores[remaining[0]]
        near = [m for m in remaining if scores[m] >= best - margin]
        pick = min(near, key=cost)
        out.append(pick)
        remaining.remove(pick)
    return out
