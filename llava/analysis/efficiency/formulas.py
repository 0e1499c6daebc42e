"""Closed-form costs of the LLM prefill: visual-token counts, FLOPs and KV-cache size.

Every cost is a sum over the decoder layers, each processing its own number of tokens: a
**token profile** ``tokens_per_layer`` (layer 0 first, one entry per layer). Visual-token
compression before the LLM (GlobalCom², FasterVLM) gives every layer the same count, the
:func:`uniform_profile`; pruning inside the LLM (all tokens up to layer K, fewer after) is a
profile that steps down. :func:`prefill_flops_per_layer` and :func:`kv_cache_bytes_per_layer`
take any profile; :func:`prefill_flops` and :func:`kv_cache_bytes` are the constant-``T`` case.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from llava.analysis.efficiency.geometry import LLMGeometry

NOMINAL_TOKENS = 2880
"""The paper's nominal LLaVA-NeXT visual-token count: 5 views × 576 (before unpadding)."""

V16_GRID_PINPOINTS: tuple[tuple[int, int], ...] = (
    (336, 672),
    (672, 336),
    (672, 672),
    (1008, 336),
    (336, 1008),
)
"""LLaVA-v1.6 AnyRes candidate resolutions, (width, height) in pixels."""

# Elementwise FLOPs per element, the LLM-Viewer convention (they never matter for time: memory bound).
RMSNORM_OPS = 7
ADD_OPS = 1
SILU_MUL_OPS = 5
SOFTMAX_OPS = 5

TokenProfile = Sequence[int | float]
"""Tokens processed by each decoder layer, layer 0 first (``num_hidden_layers`` entries)."""


# ============================================================================ token counts


def nominal_tokens(ratio: float, base: int = NOMINAL_TOKENS) -> int:
    """``floor(ratio · base)`` with a tolerance for binary fractions (0.7·2880 → 2016, not 2015)."""
    return int(math.floor(ratio * base + 1e-9))


def anyres_image_tokens(width: int, height: int) -> int:
    """Visual tokens LLaVA-v1.6 (AnyRes, spatial_unpad) gives a ``width × height`` image.

    Imports torch (through :mod:`llava.mm_utils`), so call it only when needed.
    """
    from llava.mm_utils import anyres_token_count

    return anyres_token_count((width, height), [list(p) for p in V16_GRID_PINPOINTS])


def uniform_profile(geom: LLMGeometry, T: int | float) -> tuple[int | float, ...]:
    """The profile of ``T`` tokens in every layer (compression before the LLM, or none)."""
    return (T,) * geom.num_hidden_layers


def layer_runs(geom: LLMGeometry, tokens_per_layer: TokenProfile) -> list[tuple[int | float, int]]:
    """Check a token profile against ``geom`` and group it into ``(tokens, n_layers)`` runs.

    Consecutive layers with equal counts form one run, so a uniform profile is the single run
    ``(T, L)`` and every cost below reduces to today's ``L · cost(T)`` exactly.
    """
    counts = list(tokens_per_layer)
    if len(counts) != geom.num_hidden_layers:
        raise ValueError(
            f"token profile has {len(counts)} entries, {geom.name} has {geom.num_hidden_layers} layers"
        )
    return profile_runs(counts)


def profile_runs(tokens_per_layer: TokenProfile) -> list[tuple[int | float, int]]:
    """A per-layer token profile as ``(tokens, n_layers)`` runs of equal consecutive counts."""
    counts = list(tokens_per_layer)
    runs: list[list] = []
    for layer, T in enumerate(counts):
        if not T >= 0:
            raise ValueError(f"token profile: layer {layer} has {T!r} tokens, expected a count >= 0")
        if runs and runs[-1][0] == T:
            runs[-1][1] += 1
        else:
            runs.append([T, 1])
    return [(T, n) for T, n in runs]


# ============================================================================ FLOPs and KV cache


def layer_prefill_flops(
    geom: LLMGeometry, T: int | float, causal: bool = False, elementwise: bool = False
) -> float:
    """FLOPs of one decoder layer over ``T`` tokens; see :func:`prefill_flops`."""
    d, m = geom.hidden_size, geom.intermediate_size
    attn_scale = 0.5 if causal else 1.0
    flops = (
        4.0 * T * d * geom.q_dim
        + 4.0 * T * d * geom.kv_dim
        + attn_scale * 4.0 * T * T * geom.q_dim
        + 6.0 * T * d * m
    )
    if elementwise:
        flops += attn_scale * SOFTMAX_OPS * geom.num_attention_heads * T * T
        flops += 2 * RMSNORM_OPS * T * d + 2 * ADD_OPS * T * d + SILU_MUL_OPS * T * m
    return flops


def prefill_flops_per_layer(
    geom: LLMGeometry, tokens_per_layer: TokenProfile, causal: bool = False, elementwise: bool = False
) -> float:
    """FLOPs of the LLM prefill when layer ``l`` processes ``tokens_per_layer[l]`` tokens.

    ``Σ_l layer_prefill_flops(T_l)``; see :func:`prefill_flops` for the per-layer formula.
    """
    return sum(
        n * layer_prefill_flops(geom, T, causal, elementwise) for T, n in layer_runs(geom, tokens_per_layer)
    )


def prefill_flops(
    geom: LLMGeometry, T: int | float, causal: bool = False, elementwise: bool = False
) -> float:
    """FLOPs of the LLM prefill over ``T`` tokens (one multiply-add = 2 FLOPs).

    General formula, summed over the ``L`` layers, with ``d`` = hidden size, ``m`` = MLP width,
    ``d_q = heads · head_dim`` (= ``d`` for Llama), ``d_kv = kv_heads · head_dim``::

        q/o projections              4 · T · d · d_q
        k/v projections              4 · T · d · d_kv
        attention scores + values    4 · T² · d_q        (× 1/2 with ``causal``)
        gated MLP (gate, up, down)   6 · T · d · m
        total                        L · (4·T·d·d_q + 4·T·d·d_kv + 4·T²·d_q + 6·T·d·m)

    For multi-head attention (``d_kv = d_q = d``) this is the paper's
    ``L · (8·T·d² + 4·T²·d + 6·T·d·m)``, which reproduces its 7B TFLOPs column exactly
    (41.7 / 30.4 / 19.7 / 9.6 / 3.8 at T = R·2880) and gives 79.9 / 58.6 / 38.2 / 18.7 / 7.4
    for 13B (paper: 80.0 / 58.7 / 38.3 / 18.7 / 7.4).

    ``causal`` halves the T² term (FlashAttention-style skipping of masked tiles; the paper
    counts the full square). ``elementwise`` adds LLM-Viewer's elementwise operators per layer
    (softmax ``5·heads·T²``, two RMSNorms ``7·T·d``, two residual adds ``T·d``, SiLU·mul
    ``5·T·m``): with them the 13B column is reproduced exactly too, but the 7B R = 75 % row
    becomes 30.45 → 30.5 instead of the paper's 30.4, so the paper's two tables were not
    computed with one consistent operator set. The LM head is not included (it runs on the
    last position only: ``2·d·vocab`` FLOPs, 0.26 GFLOP for 7B).

    This is :func:`prefill_flops_per_layer` of the :func:`uniform_profile`.
    """
    return prefill_flops_per_layer(geom, uniform_profile(geom, T), causal, elementwise)


def kv_cache_bytes_per_layer(
    geom: LLMGeometry, tokens_per_layer: TokenProfile, bytes_per_value: int | float = 2
) -> int:
    """Exact KV-cache size when layer ``l`` caches ``tokens_per_layer[l]`` tokens.

    ``Σ_l 2 · d_kv · bytes · T_l`` (keys and values).
    """
    return int(
        round(
            sum(
                2 * n * geom.kv_dim * bytes_per_value * T
                for T, n in layer_runs(geom, tokens_per_layer)
            )
        )
    )


def kv_cache_bytes(geom: LLMGeometry, T: int, bytes_per_value: int | float = 2) -> int:
    """Exact KV-cache size for ``T`` tokens: ``2 · L · d_kv · bytes · T`` (keys and values)."""
    return kv_cache_bytes_per_layer(geom, uniform_profile(geom, T), bytes_per_value)
