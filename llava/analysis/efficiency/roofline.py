"""Roofline (LLM-Viewer method) prefill and decode time of the LLM, operator by operator."""

from __future__ import annotations

from typing import Any, NamedTuple

from llava.analysis.efficiency.formulas import (
    ADD_OPS,
    RMSNORM_OPS,
    SILU_MUL_OPS,
    SOFTMAX_OPS,
    TokenProfile,
    layer_runs,
    uniform_profile,
)
from llava.analysis.efficiency.geometry import Accelerator, LLMGeometry


class Op(NamedTuple):
    """One operator of a transformer layer: FLOPs and HBM bytes moved (reads + writes)."""

    name: str
    flops: float
    bytes: float


def layer_ops(
    geom: LLMGeometry,
    n_query: int,
    n_ctx: int,
    *,
    flash: bool = True,
    causal: bool = False,
    weight_bytes: float = 2,
    act_bytes: float = 2,
    kv_bytes: float = 2,
    llm_viewer: bool = False,
) -> list[Op]:
    """Operators of one decoder layer processing ``n_query`` new tokens against ``n_ctx`` keys.

    Prefill is ``n_query = n_ctx = T``; decoding one token at context ``C`` is
    ``n_query = 1, n_ctx = C``. Memory traffic counts weights read once, activations read and
    written, K/V written by the projections (the new cache entries) and read by attention.

    * ``flash=False``: the per-head ``n_query × n_ctx`` score matrix is written by QKᵀ, read
      and written by the softmax and read by PV, all in ``act_bytes``.
    * ``flash=True``: one fused operator reads Q, K and V once and writes O; scores never touch
      HBM. K/V are counted once: FlashAttention-2 runs the query tiles of one head on
      neighbouring thread blocks, which re-read that head's K/V tiles from L2, not HBM (if
      they were re-streamed from HBM for every 128-row query tile, as LLM-Viewer assumes, the
      fused operator would sit just under the A100's ridge point: 128 FLOP/byte for
      head_dim 128). With ``causal`` the masked tiles are skipped, halving the attention
      FLOPs (the unfused path computes the full square and masks it).
    * ``llm_viewer=True`` mimics LLM-Viewer's accounting, which the paper's prefill times use:
      residual adds read one tensor (not two) and the SiLU·mul is sized by the hidden size
      instead of the MLP width.
    """
    d, m = geom.hidden_size, geom.intermediate_size
    dq, dkv, heads = geom.q_dim, geom.kv_dim, geom.num_attention_heads
    n, c = n_query, n_ctx
    wb, ab, kb = weight_bytes, act_bytes, kv_bytes

    def linear(name: str, d_in: int, d_out: int, out_bytes: float) -> Op:
        return Op(name, 2.0 * n * d_in * d_out, d_in * d_out * wb + n * d_in * ab + n * d_out * out_bytes)

    def norm(name: str) -> Op:
        return Op(name, RMSNORM_OPS * n * d, 2.0 * n * d * ab)

    def add(name: str) -> Op:
        reads = 1 if llm_viewer else 2
        return Op(name, ADD_OPS * n * d, (reads + 1.0) * n * d * ab)

    ops = [
        norm("attn_norm"),
        linear("q_proj", d, dq, ab),
        linear("k_proj", d, dkv, kb),
        linear("v_proj", d, dkv, kb),
    ]
    scores = float(n) * c * heads  # elements of the score matrices of all heads
    if flash:
        frac = 0.5 if causal and n > 1 else 1.0
        ops.append(
            Op(
                "fused_attention",
                frac * (4.0 * n * c * dq + SOFTMAX_OPS * scores),
                2.0 * n * dq * ab + 2.0 * c * dkv * kb,
            )
        )
    else:
        ops += [
            Op("qk_matmul", 2.0 * n * c * dq, n * dq * ab + c * dkv * kb + scores * ab),
            Op("softmax", SOFTMAX_OPS * scores, 2.0 * scores * ab),
            Op("sv_matmul", 2.0 * n * c * dq, scores * ab + c * dkv * kb + n * dq * ab),
        ]
    act_width = d if llm_viewer else m
    ops += [
        linear("o_proj", dq, d, ab),
        add("attn_add"),
        norm("mlp_norm"),
        linear("gate_proj", d, m, ab),
        linear("up_proj", d, m, ab),
        Op("mlp_act", SILU_MUL_OPS * n * act_width, 3.0 * n * act_width * ab),
        linear("down_proj", m, d, ab),
        add("mlp_add"),
    ]
    return ops


def lm_head_op(geom: LLMGeometry, weight_bytes: float = 2, act_bytes: float = 2) -> Op:
    """The LM head on the last position (prefill yields the first token's logits; decode one)."""
    d, v = geom.hidden_size, geom.vocab_size
    return Op("lm_head", 2.0 * d * v, d * v * weight_bytes + (d + v) * act_bytes)


def op_time(op: Op, accel: Accelerator) -> float:
    """Roofline time of one operator: ``max(FLOPs / peak, bytes / bandwidth)`` seconds."""
    return max(op.flops / accel.peak_flops, op.bytes / accel.bandwidth)


def _compute_bound(op: Op, accel: Accelerator) -> bool:
    return op.flops / accel.peak_flops >= op.bytes / accel.bandwidth


def roofline_per_layer(
    geom: LLMGeometry,
    tokens_per_layer: TokenProfile,
    accel: Accelerator,
    flash: bool = True,
    *,
    causal: bool = False,
    weight_bytes: float = 2,
    act_bytes: float = 2,
    kv_bytes: float = 2,
    llm_viewer: bool = False,
) -> dict[str, Any]:
    """Roofline prefill and per-token decode time, batch 1, when layer ``l`` sees ``T_l`` tokens.

    Each operator of :func:`layer_ops` costs ``max(FLOPs / peak, bytes / bandwidth)``; layer
    ``l`` prefills ``T_l`` tokens against ``T_l`` keys and decodes one token against a context
    of ``T_l`` cached tokens; the LM head runs on one position. See :func:`roofline`.

    Returns the fields of :func:`roofline`, with ``tokens`` the profile (a tuple); an operator
    whose bound differs between layers has ``"bound": "mixed"`` in ``prefill_ops``.
    """
    runs = layer_runs(geom, tokens_per_layer)
    if any(T <= 0 for T, _ in runs):
        raise ValueError("need at least one token")
    kw = dict(weight_bytes=weight_bytes, act_bytes=act_bytes, kv_bytes=kv_bytes, llm_viewer=llm_viewer)
    head = lm_head_op(geom, weight_bytes, act_bytes)

    def total(layers: list[tuple[list[Op], int]]) -> tuple[float, float, float, float]:
        t = sum(n * sum(op_time(op, accel) for op in ops) for ops, n in layers) + op_time(head, accel)
        compute = sum(
            n * sum(op_time(op, accel) for op in ops if _compute_bound(op, accel)) for ops, n in layers
        )
        if _compute_bound(head, accel):
            compute += op_time(head, accel)
        flops = sum(n * sum(op.flops for op in ops) for ops, n in layers) + head.flops
        nbytes = sum(n * sum(op.bytes for op in ops) for ops, n in layers) + head.bytes
        return t, flops, nbytes, compute

    pre_layers = [(layer_ops(geom, T, T, flash=flash, causal=causal, **kw), n) for T, n in runs]
    dec_layers = [(layer_ops(geom, 1, T, flash=flash, causal=causal, **kw), n) for T, n in runs]
    pre_s, pre_f, pre_b, pre_c = total(pre_layers)
    dec_s, dec_f, dec_b, _ = total(dec_layers)
    breakdown: dict[str, dict[str, Any]] = {}
    for ops, n in pre_layers + [([head], 1)]:
        for op in ops:
            entry = breakdown.setdefault(op.name, {"flops": 0, "bytes": 0, "time_s": 0, "bound": None})
            entry["flops"] += n * op.flops
            entry["bytes"] += n * op.bytes
            entry["time_s"] += n * op_time(op, accel)
            bound = "compute" if _compute_bound(op, accel) else "memory"
            entry["bound"] = bound if entry["bound"] in (None, bound) else "mixed"
    return {
        "accelerator": accel.name,
        "tokens": tuple(tokens_per_layer),
        "flash": flash,
        "prefill_s": pre_s,
        "decode_s": dec_s,
        "prefill_flops": pre_f,
        "prefill_bytes": pre_b,
        "decode_flops": dec_f,
        "decode_bytes": dec_b,
        "prefill_compute_bound": pre_c / pre_s,
        "prefill_ops": breakdown,
    }


def roofline(
    geom: LLMGeometry,
    T: int,
    accel: Accelerator,
    flash: bool = True,
    *,
    causal: bool = False,
    text_tokens: int = 0,
    weight_bytes: float = 2,
    act_bytes: float = 2,
    kv_bytes: float = 2,
    llm_viewer: bool = False,
) -> dict[str, Any]:
    """Roofline (LLM-Viewer method) prefill and per-token decode time, batch 1.

    Each operator of :func:`layer_ops` costs ``max(FLOPs / peak, bytes / bandwidth)``; the
    layer is summed over the ``L`` layers, plus the LM head on one position. Prefill processes
    ``T + text_tokens`` tokens at once; decode is one token at context ``T + text_tokens``
    (memory bound: all weights plus the whole KV cache read per token). This is
    :func:`roofline_per_layer` of the uniform profile.

    Returns ``prefill_s``, ``decode_s``, ``prefill_flops``, ``prefill_bytes``,
    ``decode_flops``, ``decode_bytes``, ``prefill_compute_bound`` (fraction of the prefill
    time spent in compute-bound operators) and ``prefill_ops`` (per-operator totals over the
    layers: ``{name: {"flops", "bytes", "time_s", "bound"}}``).
    """
    n = int(T) + int(text_tokens)
    if n <= 0:
        raise ValueError("need at least one token")
    result = roofline_per_layer(
        geom, uniform_profile(geom, n), accel, flash, causal=causal, weight_bytes=weight_bytes,
        act_bytes=act_bytes, kv_bytes=kv_bytes, llm_viewer=llm_viewer,
    )  # fmt: skip
    result["tokens"] = n
    return result
