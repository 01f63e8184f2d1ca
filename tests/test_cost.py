"""The FLOPs/$ cost model against numbers worked out by hand."""

from __future__ import annotations

import pytest

from moagraph.models.cost import (
    call_dollars,
    call_flops,
    decode_flops,
    node_flops,
    prefill_flops,
    unit_flops,
)
from moagraph.models.pool import ModelSpec

# Gemma 3 270M: M = 0.268e9, L = 18, D = 640, so 2*L*D = 23,040.
GEMMA = ModelSpec(
    name="g", backend="llamacpp", model="x.gguf", params_b=0.268, layers=18, hidden_size=640
)
BIG = ModelSpec(
    name="big", backend="llamacpp", model="y.gguf", params_b=8.0, layers=32, hidden_size=4096
)
A, B = 202, 275  # MATH pilot lengths


def test_prefill_by_hand() -> None:
    # Np = 202: 2*268e6*202 = 108,272,000,000; 23,040 * 202 * 203 = 23,040 * 41,006 = 944,778,240
    assert prefill_flops(0.268e9, 18, 640, 202) == pytest.approx(
        108_272_000_000 + 944_778_240, rel=1e-12
    )


def test_decode_by_hand() -> None:
    # Nd = 275, Np = 202: 2*268e6*275 = 147,400,000,000;
    # 23,040 * 275 * (2*202 + 275 + 1) = 23,040 * 275 * 680 = 4,308,480,000
    assert decode_flops(0.268e9, 18, 640, 202, 275) == pytest.approx(151_708_480_000, rel=1e-12)


def test_node_flops_no_inputs_is_prefill_plus_decode() -> None:
    # 109,216,778,240 + 151,708,480,000
    assert node_flops(GEMMA, 0, A, B) == pytest.approx(260_925_258_240, rel=1e-12)


def test_node_flops_in_degree_lengthens_the_prompt() -> None:
    # d = 2: Np = 202 + 2*275 = 752, Nd = 275.
    # prefill = 2*268e6*752 + 23,040*752*753 = 403,072,000,000 + 13,046,538,240 = 416,118,538,240
    # decode  = 147,400,000,000 + 23,040*275*(1504 + 275 + 1) = 147,400,000,000 + 11,278,080,000
    #         = 158,678,080,000
    expected = 416_118_538_240 + 158_678_080_000
    assert node_flops(GEMMA, 2, A, B) == pytest.approx(expected, rel=1e-12)
    assert node_flops(GEMMA, 2, A, B) == pytest.approx(call_flops(GEMMA, 752, 275), rel=1e-12)
    # More inputs always cost more.
    costs = [node_flops(GEMMA, d, A, B) for d in range(5)]
    assert costs == sorted(costs) and len(set(costs)) == 5


def test_zero_tokens_cost_nothing() -> None:
    assert call_flops(GEMMA, 0, 0) == 0.0


def test_dollars_per_million_tokens() -> None:
    priced = GEMMA.model_copy(update={"price_in": 0.5, "price_out": 1.5})
    # 1,000 * 0.5 / 1e6 + 2,000 * 1.5 / 1e6 = 0.0005 + 0.003
    assert call_dollars(priced, 1000, 2000) == pytest.approx(0.0035, rel=1e-12)
    assert call_dollars(GEMMA, 1000, 2000) == 0.0


def test_unit_is_one_call_of_the_smallest_model_without_inputs() -> None:
    unit = unit_flops([BIG, GEMMA], A, B)
    assert unit == pytest.approx(260_925_258_240, rel=1e-12)
    assert unit_flops([GEMMA, BIG], A, B) == unit  # order does not matter
    assert node_flops(GEMMA, 0, A, B) / unit == pytest.approx(1.0)
    # The 8B model: 2*8e9*202 + 2*32*4096*202*203 (= 262,144 * 41,006) + 2*8e9*275 + 2*32*4096*275*680
    big = 3_232_000_000_000 + 10_749_476_864 + 4_400_000_000_000 + 49_020_928_000
    assert node_flops(BIG, 0, A, B) / unit == pytest.approx(big / 260_925_258_240, rel=1e-12)
