"""Closed-form compute cost of LLM calls (prefill + decode FLOPs) and dollars.

A node with in-degree d on a task with average input A and output B tokens
reads Np = A + d*B prompt tokens and writes Nd = B tokens. For a model with
M parameters, L layers and hidden size D:

    prefill = 2*M*Np + 2*L*D*Np*(Np+1)
    decode  = 2*M*Nd + 2*L*D*Nd*(2*Np+Nd+1)

Budgets are given in *normalised* units: one call of the smallest pool model
with no inputs costs 1, so "budget 42" means the same thing for any pool.
"""

from __future__ import annotations

from collections.abc import Iterable

from moagraph.models.pool import ModelSpec


def prefill_flops(n_params: float, layers: int, hidden: int, n_prompt: float) -> float:
    return 2.0 * n_params * n_prompt + 2.0 * layers * hidden * n_prompt * (n_prompt + 1)


def decode_flops(n_params: float, layers: int, hidden: int, n_prompt: float, n_out: float) -> float:
    return 2.0 * n_params * n_out + 2.0 * layers * hidden * n_out * (2 * n_prompt + n_out + 1)


def call_flops(model: ModelSpec, prompt_tokens: float, completion_tokens: float) -> float:
    """FLOPs of one call with measured (or planned) token counts."""
    return prefill_flops(
        model.n_params, model.layers, model.hidden_size, prompt_tokens
    ) + decode_flops(
        model.n_params, model.layers, model.hidden_size, prompt_tokens, completion_tokens
    )


def node_flops(model: ModelSpec, in_degree: int, avg_in: float, avg_out: float) -> float:
    """Planned FLOPs of a node from task averages: Np = A + d*B, Nd = B."""
    return call_flops(model, avg_in + in_degree * avg_out, avg_out)


def call_dollars(model: ModelSpec, prompt_tokens: float, completion_tokens: float) -> float:
    return (prompt_tokens * model.price_in + completion_tokens * model.price_out) / 1e6


def unit_flops(models: Iterable[ModelSpec], avg_in: float, avg_out: float) -> float:
    """FLOPs of the normalisation unit: the smallest model, no inputs."""
    smallest = min(models, key=lambda m: m.n_params)
    return node_flops(smallest, 0, avg_in, avg_out)
