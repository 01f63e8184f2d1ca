"""Architectures and list prices of the models in the real recordings.

The FLOPs cost model needs, per model, the parameter count M (billions),
the number of layers L and the hidden size D. For open models these come from
the published ``config.json`` of the model family (``num_hidden_layers``,
``hidden_size``) and the model card's parameter count (cross-checked against
``shared/data/model_params.csv``). Mixture-of-experts models are costed by
their *active* parameters per token (the total is kept in ``extra``).

Closed models (GPT-4o, o1, Claude, Gemini, ...) have no disclosed size. They
get a **clearly marked estimate** (``size_estimated: true`` and a note saying
where the figure comes from) so graphs that mix them with open models can
still be costed in FLOPs; their dollar price is the vendor's public list price
per 1M tokens at the time the recordings were made (2024), which is the number
to trust for them. ``moagraph pool show`` prints ``~`` next to every estimate.

Prices: open-weight models that are also sold per token by their own vendor
(Mistral Large 2, Mistral NeMo, DeepSeek API, Cohere Command R) carry that
vendor's list price; other open-weight models cost $0 (self-hosted; their
cost is counted in FLOPs). Prices marked ``price_approx`` are recalled list
prices that moved during 2024; check them before quoting dollars.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from moagraph.pools.importers import ARCH_RULE, estimate_arch

__all__ = ["ARCH", "CLOSED", "ModelInfo", "lookup", "model_info"]


@dataclass(frozen=True)
class Arch:
    """A model family's architecture (from its config.json)."""

    params_b: float  # total parameters, billions (model card)
    layers: int
    hidden: int
    source: str
    active_b: float | None = None  # MoE: active parameters per token


# family key -> architecture. Source: the family's config.json on its model
# page (num_hidden_layers / hidden_size) and the model card's parameter count.
ARCH: dict[str, Arch] = {
    "llama-2-7b": Arch(6.74, 32, 4096, "meta-llama/Llama-2-7b-hf config.json"),
    "llama-2-13b": Arch(13.0, 40, 5120, "meta-llama/Llama-2-13b-hf config.json"),
    "llama-2-70b": Arch(69.0, 80, 8192, "meta-llama/Llama-2-70b-hf config.json"),
    "llama-3-8b": Arch(8.03, 32, 4096, "meta-llama/Meta-Llama-3(.1)-8B config.json"),
    "llama-3-70b": Arch(70.6, 80, 8192, "meta-llama/Meta-Llama-3(.1)-70B config.json"),
    "llama-3.1-405b": Arch(405.0, 126, 16384, "meta-llama/Llama-3.1-405B config.json"),
    "qwen1.5-7b": Arch(7.72, 32, 4096, "Qwen/Qwen1.5-7B config.json"),
    "qwen1.5-72b": Arch(72.3, 80, 8192, "Qwen/Qwen1.5-72B config.json"),
    "qwen1.5-110b": Arch(111.0, 80, 8192, "Qwen/Qwen1.5-110B config.json"),
    "qwen2-7b": Arch(7.62, 28, 3584, "Qwen/Qwen2-7B config.json"),
    "qwen2-72b": Arch(72.7, 80, 8192, "Qwen/Qwen2-72B config.json"),
    "qwen2.5-3b": Arch(3.09, 36, 2048, "Qwen/Qwen2.5-3B config.json"),
    "qwen2.5-7b": Arch(7.62, 28, 3584, "Qwen/Qwen2.5-7B config.json"),
    "qwen2.5-32b": Arch(32.5, 64, 5120, "Qwen/Qwen2.5-32B config.json"),
    "qwen2.5-72b": Arch(72.7, 80, 8192, "Qwen/Qwen2.5-72B config.json"),
    "gemma-7b": Arch(8.54, 28, 3072, "google/gemma-7b config.json"),
    "gemma-2-2b": Arch(2.61, 26, 2304, "google/gemma-2-2b config.json"),
    "gemma-2-9b": Arch(9.24, 42, 3584, "google/gemma-2-9b config.json"),
    "gemma-2-27b": Arch(27.2, 46, 4608, "google/gemma-2-27b config.json"),
    "phi-3-mini": Arch(3.82, 32, 3072, "microsoft/Phi-3(.5)-mini-instruct config.json"),
    "mistral-7b": Arch(7.24, 32, 4096, "mistralai/Mistral-7B-v0.1 config.json"),
    "mathstral-7b": Arch(7.25, 32, 4096, "mistralai/Mathstral-7B-v0.1 config.json (Mistral-7B)"),
    "mixtral-8x7b": Arch(
        46.7, 32, 4096, "mistralai/Mixtral-8x7B-v0.1 config.json (2 of 8 experts)", active_b=12.9
    ),
    "mistral-nemo": Arch(12.2, 40, 5120, "mistralai/Mistral-Nemo-Instruct-2407 config.json"),
    "mistral-large-2": Arch(123.0, 88, 12288, "mistralai/Mistral-Large-Instruct-2407 config.json"),
    "yi-6b": Arch(6.06, 32, 4096, "01-ai/Yi-6B config.json"),
    "yi-1.5-9b": Arch(8.83, 48, 4096, "01-ai/Yi-1.5-9B config.json"),
    "yi-34b": Arch(34.4, 60, 7168, "01-ai/Yi-34B / Yi-1.5-34B config.json"),
    "deepseek-v2": Arch(
        236.0, 60, 5120, "deepseek-ai/DeepSeek-V2 config.json (MoE, 21B active)", active_b=21.0
    ),
    "command-r": Arch(35.0, 40, 8192, "CohereForAI/c4ai-command-r-v01 config.json"),
    "command-r-plus": Arch(104.0, 64, 12288, "CohereForAI/c4ai-command-r-plus config.json"),
    "jamba-1.5-large": Arch(
        398.0, 72, 8192, "ai21labs/AI21-Jamba-1.5-Large config.json (hybrid SSM MoE)", active_b=94.0
    ),
}

# Closed (or API-only) models: a size estimate for FLOPs, and the list price.
# MEDEC = Abacha et al. 2024, arXiv:2412.19260, which gives rough size
# estimates of closed models (not vendor figures). "tier placeholder" = no
# published figure at all; a round number for the vendor's tier, so FLOPs stay
# comparable, never to be read as a size.
_MEDEC = "estimate published in arXiv:2412.19260 (MEDEC); undisclosed by the vendor"
_TIER = "tier placeholder: size undisclosed and no published estimate"
CLOSED: dict[str, dict[str, Any]] = {
    "gpt-4o": dict(params_b=200.0, size_note=_MEDEC, price=(5.0, 15.0)),
    "gpt-4o-2024-08-06": dict(params_b=200.0, size_note=_MEDEC, price=(2.5, 10.0)),
    "gpt-4o-mini": dict(params_b=8.0, size_note=_MEDEC, price=(0.15, 0.60)),
    "o1-preview": dict(params_b=300.0, size_note=_MEDEC, price=(15.0, 60.0)),
    "o1-mini": dict(params_b=100.0, size_note=_MEDEC, price=(3.0, 12.0)),
    "claude-3-5-sonnet": dict(params_b=175.0, size_note=_MEDEC, price=(3.0, 15.0)),
    "gpt-4": dict(
        params_b=280.0,
        size_note="estimate: ~1.76T total (MEDEC), ~280B active per token (unconfirmed "
        "press reports); undisclosed by the vendor",
        price=(30.0, 60.0),
    ),
    "gpt-4-turbo": dict(
        params_b=280.0, size_note="estimate, as gpt-4 (undisclosed)", price=(10.0, 30.0)
    ),
    "gpt-3.5-turbo": dict(
        params_b=20.0,
        size_note="estimate: the figure in Microsoft's CodeFusion paper (arXiv:2310.17680 v1, "
        "withdrawn); undisclosed by the vendor",
        price=(0.5, 1.5),
    ),
    "claude-3-opus": dict(params_b=200.0, size_note=_TIER, price=(15.0, 75.0)),
    "claude-3-sonnet": dict(params_b=70.0, size_note=_TIER, price=(3.0, 15.0)),
    "claude-3-haiku": dict(params_b=20.0, size_note=_TIER, price=(0.25, 1.25)),
    "gemini-1.5-pro": dict(params_b=200.0, size_note=_TIER, price=(3.5, 10.5), price_approx=True),
    "gemini-1.5-flash": dict(params_b=20.0, size_note=_TIER, price=(0.35, 1.05), price_approx=True),
    "gemini-1.5-pro-002": dict(params_b=200.0, size_note=_TIER, price=(1.25, 5.0)),
    "gemini-1.5-flash-002": dict(params_b=20.0, size_note=_TIER, price=(0.075, 0.30)),
    "yi-large": dict(params_b=100.0, size_note=_TIER, price=(3.0, 3.0), price_approx=True),
    "reka-core": dict(params_b=200.0, size_note=_TIER, price=(10.0, 25.0), price_approx=True),
    "reka-flash": dict(
        params_b=21.0,
        size_note="vendor statement (~21B); architecture undisclosed",
        price=(0.8, 2.0),
        price_approx=True,
    ),
}

# Open-weight models sold per token by their own vendor: list price (2024).
VENDOR_PRICE: dict[str, tuple[float, float, bool]] = {
    "mistral-large-2": (3.0, 9.0, False),
    "mistral-nemo": (0.3, 0.3, False),
    "deepseek-api": (0.14, 0.28, False),
    "command-r": (0.5, 1.5, True),
    "command-r-plus": (3.0, 15.0, True),
}

# Recorded model name (lower case, provider suffix "@..." removed) -> key.
_PATTERNS: list[tuple[str, str]] = [
    (r"^athene-70b", "llama-3-70b"),
    (r"llama-3\.1-405b|llama-3_1-405b", "llama-3.1-405b"),
    (r"llama-3(\.1|_1)?-8b", "llama-3-8b"),
    (r"llama-3(\.1|_1)?-70b", "llama-3-70b"),
    (r"llama-2-7b", "llama-2-7b"),
    (r"llama-2-13b", "llama-2-13b"),
    (r"llama-2-70b", "llama-2-70b"),
    (r"qwen1\.5-7b", "qwen1.5-7b"),
    (r"qwen1\.5-72b", "qwen1.5-72b"),
    (r"qwen1\.5-110b", "qwen1.5-110b"),
    (r"qwen2-7b", "qwen2-7b"),
    (r"qwen2-72b", "qwen2-72b"),
    (r"qwen2\.5-3b", "qwen2.5-3b"),
    (r"qwen2\.5-7b", "qwen2.5-7b"),
    (r"qwen2\.5-32b", "qwen2.5-32b"),
    (r"qwen2\.5-72b", "qwen2.5-72b"),
    (r"^gemma-2-2b", "gemma-2-2b"),
    (r"^gemma-2-9b", "gemma-2-9b"),
    (r"^gemma-2-27b", "gemma-2-27b"),
    (r"^gemma-7b", "gemma-7b"),
    (r"phi-3(\.5)?-mini", "phi-3-mini"),
    (r"^mixtral-8x7b", "mixtral-8x7b"),
    (r"^mathstral-7b", "mathstral-7b"),
    (r"^mistral-7b", "mistral-7b"),
    (r"^mistral-nemo", "mistral-nemo"),
    (r"^mistral-large-2", "mistral-large-2"),
    (r"^yi-1\.5-9b", "yi-1.5-9b"),
    (r"^yi-(1\.5-)?34b", "yi-34b"),
    (r"^yi-6b", "yi-6b"),
    (r"^deepseek-(coder-v2|chat|coder|v2)", "deepseek-v2"),
    (r"^(c4ai-)?command-r-plus", "command-r-plus"),
    (r"^(c4ai-)?command-r", "command-r"),
    (r"^jamba-1\.5-large", "jamba-1.5-large"),
]
_CLOSED_PATTERNS: list[tuple[str, str]] = [
    (r"^gpt-4o-mini", "gpt-4o-mini"),
    (r"^gpt-4o-2024-08-06", "gpt-4o-2024-08-06"),
    (r"^(gpt-4o|chatgpt-4o)", "gpt-4o"),
    (r"^gpt-4-turbo", "gpt-4-turbo"),
    (r"^gpt-4-0", "gpt-4"),
    (r"^gpt-3\.5-turbo", "gpt-3.5-turbo"),
    (r"^o1-preview", "o1-preview"),
    (r"^o1-mini", "o1-mini"),
    (r"^claude-3-5-sonnet", "claude-3-5-sonnet"),
    (r"^claude-3-opus", "claude-3-opus"),
    (r"^claude-3-sonnet", "claude-3-sonnet"),
    (r"^claude-3-haiku", "claude-3-haiku"),
    (r"^gemini-1\.5-pro-002", "gemini-1.5-pro-002"),
    (r"^gemini-1\.5-flash-002", "gemini-1.5-flash-002"),
    (r"^gemini-1\.5-pro", "gemini-1.5-pro"),
    (r"^gemini-1\.5-flash", "gemini-1.5-flash"),
    (r"^yi-large", "yi-large"),
    (r"^reka-core", "reka-core"),
    (r"^reka-flash", "reka-flash"),
]


@dataclass(frozen=True)
class ModelInfo:
    """What the cost model needs for one recorded model, with provenance."""

    name: str
    params_b: float  # for FLOPs: active parameters (MoE) or the (estimated) size
    layers: int
    hidden_size: int
    price_in: float
    price_out: float
    closed: bool
    size_estimated: bool
    arch_estimated: bool
    extra: dict[str, Any] = field(default_factory=dict)


def _key(name: str) -> str:
    return name.split("@", 1)[0].strip().lower().replace("meta-llama", "llama")


def lookup(name: str) -> tuple[str, str] | None:
    """("open" | "closed", catalog key) for a recorded model name, or None."""
    k = _key(name)
    for pat, key in _CLOSED_PATTERNS:
        if re.search(pat, k):
            return "closed", key
    for pat, key in _PATTERNS:
        if re.search(pat, k):
            return "open", key
    return None


def model_info(name: str) -> ModelInfo:
    """Architecture and price of a recorded model; ValueError if it is unknown."""
    hit = lookup(name)
    if hit is None:
        raise ValueError(
            f"model {name!r} is not in moagraph.pools.catalog; add its family there "
            "(params, layers, hidden size from its config.json; price) or leave it out with --models"
        )
    kind, key = hit
    if kind == "open":
        a = ARCH[key]
        active = a.active_b or a.params_b
        extra: dict[str, Any] = {"family": key, "arch_source": a.source}
        if a.active_b:
            extra.update(moe=True, params_total_b=a.params_b, params_active_b=a.active_b)
        vkey = key
        if key == "deepseek-v2":  # the DeepSeek API models; DeepSeek-Coder-V2 = open weights
            vkey = "" if "coder-v2" in _key(name) else "deepseek-api"
        pin, pout, approx = VENDOR_PRICE.get(vkey, (0.0, 0.0, False))
        if pin or pout:
            extra["price_note"] = "vendor API list price per 1M tokens (2024)"
            if approx:
                extra["price_approx"] = True
        else:
            extra["price_note"] = "open weights, self-hosted: $0 (cost counted in FLOPs)"
        return ModelInfo(name, active, a.layers, a.hidden, pin, pout, False, False, False, extra)
    c = CLOSED[key]
    layers, hidden = estimate_arch(c["params_b"])
    pin, pout = c["price"]
    extra = {
        "family": key,
        "closed": True,
        "size_estimated": True,
        "size_note": c["size_note"],
        "arch_estimated": True,
        "arch_rule": ARCH_RULE,
        "price_note": "vendor list price per 1M input / output tokens (2024)",
    }
    if c.get("price_approx"):
        extra["price_approx"] = True
    if "exp" in _key(name):
        extra["price_note"] = (
            "experimental model, no list price: the stable model's list price is assumed"
        )
        extra["price_approx"] = True
    return ModelInfo(name, c["params_b"], layers, hidden, pin, pout, True, True, True, extra)
