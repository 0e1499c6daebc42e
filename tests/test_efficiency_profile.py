"""Per-layer token profiles of llava.analysis.efficiency (the base of in-LLM pruning and video counts)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llava.analysis.efficiency import (
    ACCELERATORS,
    LLMGeometry,
    kv_cache_bytes,
    kv_cache_bytes_per_layer,
    layer_runs,
    lm_head_op,
    op_time,
    prefill_flops,
    prefill_flops_per_layer,
    roofline,
    roofline_per_layer,
    uniform_profile,
)

G7 = LLMGeometry.llava_next_7b()
GQA = LLMGeometry("gqa", 6, 512, 1408, 8, 2, 64, 1000)
A100 = ACCELERATORS["A100-80GB"]


def split(geom: LLMGeometry, k: int) -> tuple[LLMGeometry, LLMGeometry]:
    """The first ``k`` layers and the rest, as two shallower models of the same shape."""
    return replace(geom, num_hidden_layers=k), replace(geom, num_hidden_layers=geom.num_hidden_layers - k)


def test_uniform_profile_is_the_constant_formula():
    assert uniform_profile(G7, 2880) == (2880,) * 32
    assert layer_runs(G7, uniform_profile(G7, 2880)) == [(2880, 32)]
    for causal in (False, True):
        for elementwise in (False, True):
            assert prefill_flops_per_layer(
                G7, [720] * 32, causal=causal, elementwise=elementwise
            ) == prefill_flops(G7, 720, causal=causal, elementwise=elementwise)
    assert kv_cache_bytes_per_layer(G7, [720] * 32) == kv_cache_bytes(G7, 720) == 2 * 32 * 4096 * 2 * 720


@pytest.mark.parametrize("geom", [G7, GQA], ids=["7b", "gqa"])
@pytest.mark.parametrize("causal", [False, True])
def test_step_profile_sums_two_shallower_models(geom, causal):
    # FastV-like: all 2928 tokens in the first 2 layers, 732 after; costs add up layer by layer
    k, full, kept = 2, 2928, 732
    head, tail = split(geom, k)
    profile = [full] * k + [kept] * (geom.num_hidden_layers - k)
    expected = prefill_flops(head, full, causal=causal) + prefill_flops(tail, kept, causal=causal)
    assert prefill_flops_per_layer(geom, profile, causal=causal) == pytest.approx(expected, rel=1e-12)
    assert kv_cache_bytes_per_layer(geom, profile, 1) == kv_cache_bytes(head, full, 1) + kv_cache_bytes(
        tail, kept, 1
    )
    # per layer by hand: d_kv = kv_heads * head_dim
    assert kv_cache_bytes_per_layer(geom, profile) == 2 * geom.kv_dim * 2 * (k * full + (len(profile) - k) * kept)


@pytest.mark.parametrize("flash", [True, False])
def test_step_profile_roofline_counts_the_lm_head_once(flash):
    k, full, kept = 3, 2928, 100
    head, tail = split(G7, k)
    profile = [full] * k + [kept] * (32 - k)
    got = roofline_per_layer(G7, profile, A100, flash)
    a, b = roofline(head, full, A100, flash), roofline(tail, kept, A100, flash)
    lm = lm_head_op(G7)
    for key, head_cost in (("prefill_s", op_time(lm, A100)), ("decode_s", op_time(lm, A100))):
        assert got[key] == pytest.approx(a[key] + b[key] - head_cost, rel=1e-12)
    assert got["prefill_flops"] == pytest.approx(a["prefill_flops"] + b["prefill_flops"] - lm.flops, rel=1e-12)
    assert got["tokens"] == tuple(profile)
    ops = got["prefill_ops"]
    assert ops["q_proj"]["flops"] == pytest.approx(
        a["prefill_ops"]["q_proj"]["flops"] + b["prefill_ops"]["q_proj"]["flops"], rel=1e-12
    )
    assert ops["lm_head"]["flops"] == lm.flops
    # an operator compute bound at 2928 tokens but memory bound at 100 is reported as mixed
    bounds = {n: (a["prefill_ops"][n]["bound"], b["prefill_ops"][n]["bound"]) for n in ops if n != "lm_head"}
    for name, (first, rest) in bounds.items():
        assert ops[name]["bound"] == (first if first == rest else "mixed")
    assert "mixed" in {op["bound"] for op in ops.values()}


def test_roofline_is_the_uniform_profile():
    got = roofline(G7, 700, A100, causal=True, text_tokens=20)
    ref = roofline_per_layer(G7, [720] * 32, A100, causal=True)
    assert got["tokens"] == 720
    assert {k: v for k, v in got.items() if k != "tokens"} == {k: v for k, v in ref.items() if k != "tokens"}


@pytest.mark.parametrize(
    "profile, match",
    [([100] * 31, "31 entries"), ([100] * 31 + [-1], "layer 31"), ([float("nan")] * 32, "layer 0")],
)
def test_bad_profiles_are_named(profile, match):
    with pytest.raises(ValueError, match=match):
        prefill_flops_per_layer(G7, profile)
    with pytest.raises(ValueError):
        roofline_per_layer(G7, [100] * 31 + [0], A100)
