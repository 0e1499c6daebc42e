"""Theoretical cost of LLaVA-NeXT's LLM prefill over the visual tokens.

Run ``python -m llava.analysis.efficiency --help``. For each retention ratio ``R`` (or each
actual kept-token count) this reports, per LLM geometry and accelerator:

* ``T`` -- visual tokens fed to the LLM (nominal ``R·2880`` as in the paper, or
  ``floor(R·count)`` of the real LLaVA-NeXT count for an image size, or given counts);
* prefill TFLOPs (:func:`prefill_flops`, the paper's formula generalised to GQA);
* KV-cache size (:func:`kv_cache_bytes`) in decimal MB, plus the paper's reporting convention
  (:func:`paper_convention_kv_mb`);
* roofline prefill time and per-token decode time (:func:`roofline`, the LLM-Viewer method),
  with and without FlashAttention-style fused attention.

``--paper`` adds the paper's Tables VI/VII next to the estimates and explains the prefill-time
difference: the paper's milliseconds are reproduced to 0.1 ms in all ten rows by an
LLM-Viewer roofline with *unfused* attention (fp16, batch 1) at 312 TFLOP/s, but with
1.555 TB/s (A100-40GB bandwidth) for the 7B table and 2.039 TB/s (A100-80GB) for 13B; see
:func:`paper_explanation`.

Everything here is pure arithmetic: no torch import unless ``--image-size`` is used.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

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

DEFAULT_RATIOS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.1)

DEFAULT_METHOD = "GlobalCom²"

# Elementwise FLOPs per element, the LLM-Viewer convention (they never matter for time: memory bound).
_RMSNORM_OPS = 7
_ADD_OPS = 1
_SILU_MUL_OPS = 5
_SOFTMAX_OPS = 5


# ============================================================================ geometry


@dataclass(frozen=True)
class LLMGeometry:
    """Shape of a decoder-only (Llama-style, gated-MLP) language model.

    ``head_dim`` defaults to ``hidden_size // num_attention_heads``; ``num_key_value_heads``
    defaults to ``num_attention_heads`` (multi-head attention).
    """

    name: str
    num_hidden_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int = 32000

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "name" and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"LLMGeometry.{f.name} must be a positive int, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )

    @property
    def q_dim(self) -> int:
        """Width of the concatenated query (and attention output) heads, ``heads · head_dim``."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the concatenated key (or value) heads, ``kv_heads · head_dim`` (``d_kv``)."""
        return self.num_key_value_heads * self.head_dim

    def shape_key(self) -> tuple[int, ...]:
        """Every size field except the name (two geometries with equal keys cost the same)."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "name")

    @classmethod
    def llava_next_7b(cls) -> LLMGeometry:
        """LLaVA-NeXT-7B's LLM (Vicuna-7B, Llama-2 shape)."""
        return cls("llava-next-7b", 32, 4096, 11008, 32, 32, 128, 32000)

    @classmethod
    def llava_next_13b(cls) -> LLMGeometry:
        """LLaVA-NeXT-13B's LLM (Vicuna-13B, Llama-2 shape)."""
        return cls("llava-next-13b", 40, 5120, 13824, 40, 40, 128, 32000)

    @classmethod
    def from_config(
        cls, path_or_dict: str | Path | Mapping[str, Any], name: str | None = None
    ) -> LLMGeometry:
        """Read a LLaVA / Llama ``config.json`` (a path to the file or its directory, or a dict).

        Reads ``num_hidden_layers``, ``hidden_size``, ``intermediate_size``,
        ``num_attention_heads`` and, when present, ``num_key_value_heads``, ``head_dim`` and
        ``vocab_size``. The original LLaVA format keeps them at the top level; the
        transformers ``Llava(Next)ForConditionalGeneration`` format nests them under
        ``text_config``, where (as transformers does) missing fields take ``LlamaConfig``'s
        defaults (Llama-2-7B's shape).
        """
        if isinstance(path_or_dict, Mapping):
            cfg: Mapping[str, Any] = path_or_dict
            default_name = str(cfg.get("_name_or_path") or "config")
        else:
            path = Path(path_or_dict)
            if path.is_dir():
                path = path / "config.json"
            with open(path, encoding="utf-8") as fh:
                cfg = json.load(fh)
            default_name = str(cfg.get("_name_or_path") or path.parent.name or path.stem)
        llama_defaults = {
            "num_hidden_layers": 32,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_attention_heads": 32,
        }
        source: Mapping[str, Any] = cfg
        defaults: Mapping[str, Any] = {}
        if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), Mapping):
            source, defaults = cfg["text_config"], llama_defaults
        values: dict[str, Any] = {}
        for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads"):
            if key in source:
                values[key] = int(source[key])
            elif key in defaults:
                values[key] = defaults[key]
            else:
                raise KeyError(f"config has no {key!r} (neither at the top level nor in text_config)")
        for key in ("num_key_value_heads", "head_dim", "vocab_size"):
            if source.get(key) is not None:
                values[key] = int(source[key])
        return cls(name=name or default_name.rstrip("/").split("/")[-1], **values)


@dataclass(frozen=True)
class Accelerator:
    """Peak dense fp16 tensor throughput (TFLOP/s) and HBM bandwidth (TB/s, decimal)."""

    name: str
    peak_tflops: float
    bandwidth_tbps: float

    @property
    def peak_flops(self) -> float:
        """FLOP/s."""
        return self.peak_tflops * 1e12

    @property
    def bandwidth(self) -> float:
        """Bytes/s."""
        return self.bandwidth_tbps * 1e12

    @classmethod
    def parse(cls, spec: str) -> Accelerator:
        """A built-in name (case-insensitive) or ``NAME:TFLOPS:TBPS``."""
        for key, accel in ACCELERATORS.items():
            if spec.lower() == key.lower():
                return accel
        parts = spec.split(":")
        if len(parts) != 3:
            raise ValueError(
                f"unknown accelerator {spec!r}: use one of {', '.join(ACCELERATORS)} or NAME:TFLOPS:TBPS"
            )
        name, tflops, tbps = parts
        try:
            accel = cls(name, float(tflops), float(tbps))
        except ValueError as exc:
            raise ValueError(f"bad accelerator spec {spec!r}: TFLOPS and TBPS must be numbers") from exc
        if not name or accel.peak_tflops <= 0 or accel.bandwidth_tbps <= 0:
            raise ValueError(f"bad accelerator spec {spec!r}: need a name and positive numbers")
        return accel


# Published datasheet figures (dense fp16/bf16 tensor-core peak, without sparsity).
ACCELERATORS: dict[str, Accelerator] = {
    "A100-80GB": Accelerator("A100-80GB", 312.0, 2.039),
    "A100-40GB": Accelerator("A100-40GB", 312.0, 1.555),
    "H100-SXM": Accelerator("H100-SXM", 989.0, 3.35),
    "H200": Accelerator("H200", 989.0, 4.8),
}
DEFAULT_ACCELERATOR = "A100-80GB"


# ============================================================================ FLOPs and KV cache


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
    """
    L, d, m = geom.num_hidden_layers, geom.hidden_size, geom.intermediate_size
    attn_scale = 0.5 if causal else 1.0
    per_layer = (
        4.0 * T * d * geom.q_dim
        + 4.0 * T * d * geom.kv_dim
        + attn_scale * 4.0 * T * T * geom.q_dim
        + 6.0 * T * d * m
    )
    if elementwise:
        per_layer += attn_scale * _SOFTMAX_OPS * geom.num_attention_heads * T * T
        per_layer += 2 * _RMSNORM_OPS * T * d + 2 * _ADD_OPS * T * d + _SILU_MUL_OPS * T * m
    return L * per_layer


def kv_cache_bytes(geom: LLMGeometry, T: int, bytes_per_value: int | float = 2) -> int:
    """Exact KV-cache size for ``T`` tokens: ``2 · L · d_kv · bytes · T`` (keys and values)."""
    return int(round(2 * geom.num_hidden_layers * geom.kv_dim * bytes_per_value * T))


def paper_convention_kv_mb(nbytes: int | float) -> float:
    """A KV-cache size (bytes) in MB as the paper reports it (Tables VI/VII).

    The paper's figures are LLM-Viewer-style displays turned back into MB:

    * above 1e9 bytes the size is shown in decimal GB to one decimal, and the paper multiplies
      that by **1024** (binary) to get MB: 7B at R = 100 %, 1509.9 MB → "1.5 G" → 1536.0;
    * from 1e8 to 1e9 bytes it is shown as whole decimal MB: 754.97 → 755.0, 377.49 → 377.0
      (not 377.5), 150.99 → 151.0;
    * below 1e8 bytes (never reached in the paper), MB to one decimal.

    This reproduces all ten KV rows of the paper. Where the paper is inconsistent:
    (1) the GB rows mix decimal GB with a ×1024 conversion, overstating the exact size by
    +1.7 % (7B, 100 %), −0.5 % (7B, 75 %) and +4.2 % (13B at 100, 75 and 50 %); (2) the
    switch is by size, not by ratio: 13B at R = 50 % (1179.6 MB exact) is reported as 1228.8,
    in the GB convention, while 7B at R = 50 % (754.97 MB) is the exact decimal value; (3)
    the sub-GB rows are rounded to whole MB although printed with one decimal.
    """
    if nbytes > 1e9:
        return float(f"{nbytes / 1e9:.1f}") * 1024.0
    if nbytes > 1e8:
        return float(f"{nbytes / 1e6:.0f}")
    return float(f"{nbytes / 1e6:.1f}")


# ============================================================================ roofline


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
        return Op(name, _RMSNORM_OPS * n * d, 2.0 * n * d * ab)

    def add(name: str) -> Op:
        reads = 1 if llm_viewer else 2
        return Op(name, _ADD_OPS * n * d, (reads + 1.0) * n * d * ab)

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
                frac * (4.0 * n * c * dq + _SOFTMAX_OPS * scores),
                2.0 * n * dq * ab + 2.0 * c * dkv * kb,
            )
        )
    else:
        ops += [
            Op("qk_matmul", 2.0 * n * c * dq, n * dq * ab + c * dkv * kb + scores * ab),
            Op("softmax", _SOFTMAX_OPS * scores, 2.0 * scores * ab),
            Op("sv_matmul", 2.0 * n * c * dq, scores * ab + c * dkv * kb + n * dq * ab),
        ]
    act_width = d if llm_viewer else m
    ops += [
        linear("o_proj", dq, d, ab),
        add("attn_add"),
        norm("mlp_norm"),
        linear("gate_proj", d, m, ab),
        linear("up_proj", d, m, ab),
        Op("mlp_act", _SILU_MUL_OPS * n * act_width, 3.0 * n * act_width * ab),
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
    (memory bound: all weights plus the whole KV cache read per token).

    Returns ``prefill_s``, ``decode_s``, ``prefill_flops``, ``prefill_bytes``,
    ``decode_flops``, ``decode_bytes``, ``prefill_compute_bound`` (fraction of the prefill
    time spent in compute-bound operators) and ``prefill_ops`` (per-operator totals over the
    layers: ``{name: {"flops", "bytes", "time_s", "bound"}}``).
    """
    n = int(T) + int(text_tokens)
    if n <= 0:
        raise ValueError("need at least one token")
    kw = dict(weight_bytes=weight_bytes, act_bytes=act_bytes, kv_bytes=kv_bytes, llm_viewer=llm_viewer)
    L = geom.num_hidden_layers
    head = lm_head_op(geom, weight_bytes, act_bytes)

    def total(ops: list[Op]) -> tuple[float, float, float, float]:
        t = L * sum(op_time(op, accel) for op in ops) + op_time(head, accel)
        compute = L * sum(
            op_time(op, accel) for op in ops if op.flops / accel.peak_flops >= op.bytes / accel.bandwidth
        )
        if head.flops / accel.peak_flops >= head.bytes / accel.bandwidth:
            compute += op_time(head, accel)
        flops = L * sum(op.flops for op in ops) + head.flops
        nbytes = L * sum(op.bytes for op in ops) + head.bytes
        return t, flops, nbytes, compute

    pre_ops = layer_ops(geom, n, n, flash=flash, causal=causal, **kw)
    dec_ops = layer_ops(geom, 1, n, flash=flash, causal=causal, **kw)
    pre_s, pre_f, pre_b, pre_c = total(pre_ops)
    dec_s, dec_f, dec_b, _ = total(dec_ops)
    breakdown: dict[str, dict[str, Any]] = {}
    for op, mult in [(op, L) for op in pre_ops] + [(head, 1)]:
        compute_bound = op.flops / accel.peak_flops >= op.bytes / accel.bandwidth
        breakdown[op.name] = {
            "flops": mult * op.flops,
            "bytes": mult * op.bytes,
            "time_s": mult * op_time(op, accel),
            "bound": "compute" if compute_bound else "memory",
        }
    return {
        "accelerator": accel.name,
        "tokens": n,
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


# ============================================================================ the paper


class PaperRow(NamedTuple):
    tflops: float
    kv_mb: float
    prefill_ms: float


PAPER_TABLES: dict[str, dict[float, PaperRow]] = {
    "llava-next-7b": {
        1.0: PaperRow(41.7, 1536.0, 170.7),
        0.75: PaperRow(30.4, 1126.4, 119.9),
        0.5: PaperRow(19.7, 755.0, 74.5),
        0.25: PaperRow(9.6, 377.0, 34.6),
        0.1: PaperRow(3.8, 151.0, 13.3),
    },
    "llava-next-13b": {
        1.0: PaperRow(80.0, 2457.6, 295.1),
        0.75: PaperRow(58.7, 1843.2, 211.6),
        0.5: PaperRow(38.3, 1228.8, 134.6),
        0.25: PaperRow(18.7, 590.0, 64.1),
        0.1: PaperRow(7.4, 236.0, 25.0),
    },
}
"""Tables VI/VII (LLaVA-NeXT, "A100-80GB"): prefill of the visual tokens only, T = R·2880."""

_BUILTINS = {"7b": LLMGeometry.llava_next_7b, "13b": LLMGeometry.llava_next_13b}


def paper_key(geom: LLMGeometry) -> str | None:
    """The :data:`PAPER_TABLES` key of a geometry shaped like one of the paper's models."""
    for make in _BUILTINS.values():
        ref = make()
        if geom.shape_key() == ref.shape_key():
            return ref.name
    return None


def paper_row(geom: LLMGeometry, ratio: float, tokens: int, text_tokens: int = 0) -> PaperRow | None:
    """The paper's row for this geometry and ratio, if the row is under the paper's protocol."""
    key = paper_key(geom)
    if key is None or text_tokens:
        return None
    for r, row in PAPER_TABLES[key].items():
        if abs(r - ratio) < 1e-9 and tokens == nominal_tokens(r):
            return row
    return None


def paper_reproduction_ms(geom: LLMGeometry, T: int, accel: Accelerator) -> float:
    """Prefill ms under the paper's setting: LLM-Viewer accounting, unfused attention, fp16."""
    return roofline(geom, T, accel, flash=False, llm_viewer=True)["prefill_s"] * 1e3


def paper_explanation(geom: LLMGeometry, accel: Accelerator | None = None) -> list[str]:
    """Printed lines explaining the paper's prefill ms for a paper-shaped geometry.

    Finds which built-in A100 bandwidth reproduces the paper's times with
    :func:`paper_reproduction_ms` and reports the implied effective TFLOP/s
    (paper FLOPs ÷ paper ms) against the 312 TFLOP/s peak.
    """
    key = paper_key(geom)
    if key is None:
        return []
    accel = accel or ACCELERATORS[DEFAULT_ACCELERATOR]
    table = PAPER_TABLES[key]
    peak = ACCELERATORS["A100-80GB"].peak_tflops
    implied = {
        r: prefill_flops(geom, nominal_tokens(r)) / (row.prefill_ms * 1e-3) / 1e12 for r, row in table.items()
    }
    lo, hi = min(implied.values()), max(implied.values())
    full = nominal_tokens(1.0)
    floor_ms = prefill_flops(geom, full) / ACCELERATORS["A100-80GB"].peak_flops * 1e3
    lines = [
        f"{key}: the paper's prefill ms imply {lo:.0f}-{hi:.0f} TFLOP/s effective (FLOPs / ms), "
        f"{lo / peak:.0%}-{hi / peak:.0%} of the A100's {peak:.0f} TFLOP/s fp16 peak; the efficiency "
        f"rises as R falls.",
        f"  Pure compute at peak would take {floor_ms:.1f} ms at R = 100 % "
        f"(paper: {table[1.0].prefill_ms:.1f} ms).",
    ]
    fits = []
    for name in ("A100-40GB", "A100-80GB"):
        a100 = ACCELERATORS[name]
        err = max(
            abs(paper_reproduction_ms(geom, nominal_tokens(r), a100) - row.prefill_ms)
            for r, row in table.items()
        )
        fits.append((err, a100))
        lines.append(
            f"  LLM-Viewer roofline, unfused attention, fp16, batch 1, {a100.peak_tflops:.0f} TFLOP/s & "
            f"{a100.bandwidth_tbps:.3f} TB/s ({name}): max |diff| over the 5 rows = {err:.2f} ms"
        )
    best_err, best = min(fits, key=lambda x: x[0])
    if best_err < 0.05:
        lines.append(
            f"  => the paper's times are reproduced to 0.1 ms by the {best.name} bandwidth "
            f"({best.bandwidth_tbps:.3f} TB/s) without FlashAttention."
        )
    else:
        lines.append(f"  => no built-in A100 preset reproduces the paper to 0.1 ms (best: {best.name}).")
    # Decompose the paper-setting time above the pure-compute floor by operator group.
    setting = roofline(geom, full, best, flash=False, llm_viewer=True)
    groups = {"unfused attention": 0.0, "norms/adds/SiLU": 0.0, "weights (projections, LM head)": 0.0}
    for name, op in setting["prefill_ops"].items():
        excess = (op["time_s"] - op["flops"] / best.peak_flops) * 1e3
        if name in ("qk_matmul", "softmax", "sv_matmul"):
            groups["unfused attention"] += excess
        elif name.endswith(("_norm", "_add", "_act")):
            groups["norms/adds/SiLU"] += excess
        else:
            groups["weights (projections, LM head)"] += excess
    gap = setting["prefill_s"] * 1e3 - setting["prefill_flops"] / best.peak_flops * 1e3
    parts = ", ".join(f"{k} {v:.1f} ms" for k, v in groups.items())
    lines.append(f"  Time above the compute floor at R = 100 % in that setting: {gap:.1f} ms = {parts}.")
    flash = roofline(geom, full, accel)
    unfused = roofline(geom, full, accel, flash=False)
    lines.append(
        f"  This tool on {accel.name} at R = 100 %: {flash['prefill_s'] * 1e3:.1f} ms with FlashAttention "
        f"({flash['prefill_compute_bound']:.0%} of it compute bound), {unfused['prefill_s'] * 1e3:.1f} ms unfused."
    )
    return lines


PAPER_NOTE = [
    "Why the paper's prefill ms differ from this tool's estimates:",
    "  * They are roofline estimates (LLM-Viewer), not measurements, made WITHOUT fused attention:",
    "    every head's T x T fp16 score matrix is written by QK^T, read+written by the softmax and",
    "    read by PV, so the memory-bound attention traffic adds a T^2 term on top of the FLOPs.",
    "  * The 7B table matches 1.555 TB/s (the A100-40GB datasheet bandwidth), the 13B table",
    "    2.039 TB/s (A100-80GB), although both are labelled A100-80GB. The rest of the",
    "    setting is LLM-Viewer's: fp16, batch 1, norms/adds/SiLU as memory-bound ops (the SiLU sized",
    "    by hidden_size), the LM head on one position.",
    "  * This tool's default (FlashAttention, scores never in HBM, exact elementwise traffic) is",
    "    mostly compute bound and therefore lower. Both are lower bounds: real kernels do not",
    "    reach the datasheet peak, so measured prefill times are longer than either estimate.",
]


# ============================================================================ tables


def nominal_tokens(ratio: float, base: int = NOMINAL_TOKENS) -> int:
    """``floor(ratio · base)`` with a tolerance for binary fractions (0.7·2880 → 2016, not 2015)."""
    return int(math.floor(ratio * base + 1e-9))


def efficiency_table(
    geom: LLMGeometry,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    base_tokens: int = NOMINAL_TOKENS,
    tokens: Sequence[int | tuple[str, int]] | None = None,
    text_tokens: int = 0,
    accelerators: Sequence[Accelerator] | None = None,
    kv_bytes: float = 2,
    causal: bool = False,
    method: str = DEFAULT_METHOD,
    paper: bool = False,
) -> list[dict[str, Any]]:
    """One row per (token count, accelerator).

    Token counts are ``floor(R · base_tokens)`` for each ratio (``base_tokens`` = 2880 for the
    paper's protocol, or a real image's count), or the given ``tokens`` (ints or
    ``(label, count)`` pairs), whose effective ratio is ``count / base_tokens``. Rows with
    ratio 1 are labelled ``"uncompressed"``, the others ``method`` (or the pair's label).

    Fields: ``model, method, ratio, tokens, text_tokens, tflops`` (:func:`prefill_flops` over
    ``tokens + text_tokens``), ``kv_mb`` (exact, decimal), ``paper_convention`` (the KV size in
    the paper's MB convention, :func:`paper_convention_kv_mb`), ``accelerator``, ``prefill_ms``
    (fused attention), ``prefill_ms_unfused``, ``decode_ms`` (per token, at context
    ``tokens + text_tokens``). With ``paper``: ``paper_tflops, paper_kv_mb, paper_prefill_ms,
    paper_implied_tflops_s`` (paper FLOPs ÷ paper ms) and ``llm_viewer_ms_a100_40gb`` /
    ``llm_viewer_ms_a100_80gb`` (:func:`paper_reproduction_ms`), ``None`` off the paper's rows.
    """
    accelerators = list(accelerators) if accelerators else [ACCELERATORS[DEFAULT_ACCELERATOR]]
    entries: list[tuple[str, float, int]] = []
    if tokens:
        for item in tokens:
            label, count = item if isinstance(item, tuple) else (None, item)
            count = int(count)
            if count <= 0:
                raise ValueError(f"token counts must be positive, got {count}")
            ratio = count / base_tokens
            entries.append((label or ("uncompressed" if count == base_tokens else method), ratio, count))
    else:
        for ratio in ratios:
            if not 0 < ratio <= 1:
                raise ValueError(f"retention ratios must be in (0, 1], got {ratio}")
            count = nominal_tokens(ratio, base_tokens)
            if count <= 0:
                raise ValueError(f"ratio {ratio} of {base_tokens} tokens keeps no token")
            entries.append(("uncompressed" if ratio == 1 else method, float(ratio), count))
    rows: list[dict[str, Any]] = []
    for label, ratio, count in entries:
        n = count + text_tokens
        kv = kv_cache_bytes(geom, n, kv_bytes)
        ref = paper_row(geom, ratio, count, text_tokens) if paper and base_tokens == NOMINAL_TOKENS else None
        for accel in accelerators:
            fused = roofline(
                geom, count, accel, True, causal=causal, text_tokens=text_tokens, kv_bytes=kv_bytes
            )
            plain = roofline(
                geom, count, accel, False, causal=causal, text_tokens=text_tokens, kv_bytes=kv_bytes
            )
            row: dict[str, Any] = {
                "model": geom.name,
                "method": label,
                "ratio": ratio,
                "tokens": count,
                "text_tokens": text_tokens,
                "tflops": prefill_flops(geom, n, causal=causal) / 1e12,
                "kv_mb": kv / 1e6,
                "paper_convention": paper_convention_kv_mb(kv),
                "accelerator": accel.name,
                "prefill_ms": fused["prefill_s"] * 1e3,
                "prefill_ms_unfused": plain["prefill_s"] * 1e3,
                "decode_ms": fused["decode_s"] * 1e3,
            }
            if paper:
                row.update(
                    paper_tflops=ref.tflops if ref else None,
                    paper_kv_mb=ref.kv_mb if ref else None,
                    paper_prefill_ms=ref.prefill_ms if ref else None,
                    paper_implied_tflops_s=(
                        prefill_flops(geom, count) / (ref.prefill_ms * 1e-3) / 1e12 if ref else None
                    ),
                    llm_viewer_ms_a100_40gb=(
                        paper_reproduction_ms(geom, count, ACCELERATORS["A100-40GB"]) if ref else None
                    ),
                    llm_viewer_ms_a100_80gb=(
                        paper_reproduction_ms(geom, count, ACCELERATORS["A100-80GB"]) if ref else None
                    ),
                )
            rows.append(row)
    return rows


def format_table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """Aligned plain-text table: text columns left-aligned, numeric ones right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]

    def numeric(i: int) -> bool:
        return all(_is_number(r[i]) for r in body) and bool(body)

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if numeric(i) else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in body)])


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%"))
    except ValueError:
        return text == "-"
    return True


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.4g}%"


def render_main_table(rows: Sequence[Mapping[str, Any]]) -> str:
    headers = [
        "model", "method", "R", "T", "TFLOPs", "KV MB", "KV MB (paper conv.)",
        "accelerator", "prefill ms (flash)", "prefill ms (unfused)", "decode ms/token",
    ]  # fmt: skip
    if any(r["text_tokens"] for r in rows):
        headers.insert(4, "text")
    body = []
    for r in rows:
        cells = [
            r["model"], r["method"], _pct(r["ratio"]), str(r["tokens"]),
            _fmt(r["tflops"]), _fmt(r["kv_mb"]), _fmt(r["paper_convention"]),
            r["accelerator"], _fmt(r["prefill_ms"]), _fmt(r["prefill_ms_unfused"]), _fmt(r["decode_ms"], 2),
        ]  # fmt: skip
        if "text" in headers:
            cells.insert(4, str(r["text_tokens"]))
        body.append(cells)
    return format_table(headers, body)


def render_paper_table(rows: Sequence[Mapping[str, Any]]) -> str:
    headers = [
        "model", "R", "T", "TFLOPs", "paper TFLOPs", "KV MB (paper conv.)", "paper KV MB",
        "accelerator", "flash ms", "unfused ms", "paper ms", "implied TFLOP/s",
        "LLM-Viewer@1.555TB/s", "LLM-Viewer@2.039TB/s",
    ]  # fmt: skip
    body = [
        [
            r["model"],
            _pct(r["ratio"]),
            str(r["tokens"]),
            _fmt(r["tflops"]),
            _fmt(r["paper_tflops"]),
            _fmt(r["paper_convention"]),
            _fmt(r["paper_kv_mb"]),
            r["accelerator"],
            _fmt(r["prefill_ms"]),
            _fmt(r["prefill_ms_unfused"]),
            _fmt(r["paper_prefill_ms"]),
            _fmt(r["paper_implied_tflops_s"]),
            _fmt(r["llm_viewer_ms_a100_40gb"]),
            _fmt(r["llm_viewer_ms_a100_80gb"]),
        ]  # fmt: skip
        for r in rows
        if r.get("paper_prefill_ms") is not None
    ]
    return format_table(headers, body)


# ============================================================================ CLI


def _token_arg(text: str) -> int | tuple[str, int]:
    label, sep, count = text.rpartition("=")
    try:
        value = int(count)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected N or LABEL=N, got {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"token counts must be positive, got {value}")
    return (label, value) if sep and label else value


def _ratio_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"retention ratios must be in (0, 1], got {value}")
    return value


def _accel_arg(text: str) -> list[Accelerator]:
    if text.lower() == "all":
        return list(ACCELERATORS.values())
    try:
        return [Accelerator.parse(text)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    accels = ", ".join(
        f"{a.name} ({a.peak_tflops:g} TFLOP/s, {a.bandwidth_tbps:g} TB/s)" for a in ACCELERATORS.values()
    )
    parser = argparse.ArgumentParser(
        prog="python -m llava.analysis.efficiency",
        description=(
            "Theoretical cost of the LLM prefill over LLaVA-NeXT's visual tokens, per retention ratio R:\n"
            "token count, prefill TFLOPs, KV-cache size and roofline (LLM-Viewer method) prefill and\n"
            "per-token decode time, with and without FlashAttention-style fused attention."
        ),
        epilog=(
            "Examples:\n"
            "  python -m llava.analysis.efficiency --model 7b --paper\n"
            "  python -m llava.analysis.efficiency --image-size 1000 600 --ratios 1 0.25\n"
            "  python -m llava.analysis.efficiency --config path/to/config.json --tokens 2928 FastV=732 "
            "--image-size 672 672\n"
            "  python -m llava.analysis.efficiency --accelerator all --json\n"
            f"\nBuilt-in accelerators: {accels}."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = parser.add_argument_group("model")
    src.add_argument(
        "--model", nargs="+", choices=sorted(_BUILTINS), default=None,
        help="built-in LLaVA-NeXT LLM geometries (default: 7b 13b, unless --config is given)",
    )  # fmt: skip
    src.add_argument(
        "--config", action="append", default=[], metavar="PATH",
        help="a LLaVA / Llama config.json (or its directory); repeatable. Reads num_hidden_layers, "
        "hidden_size, intermediate_size, num_attention_heads and num_key_value_heads if present",
    )  # fmt: skip
    tok = parser.add_argument_group("tokens")
    tok.add_argument(
        "--ratios", nargs="+", type=_ratio_arg, default=list(DEFAULT_RATIOS), metavar="R",
        help="retention ratios (default: 1 0.75 0.5 0.25 0.1)",
    )  # fmt: skip
    tok.add_argument(
        "--method", default=DEFAULT_METHOD,
        help=f"label of the compressed rows (default: {DEFAULT_METHOD}; R = 1 rows are 'uncompressed')",
    )  # fmt: skip
    tok.add_argument(
        "--image-size", nargs=2, type=int, metavar=("W", "H"),
        help="use the real LLaVA-NeXT (v1.6 AnyRes, spatial_unpad) token count of a WxH image and "
        "T = floor(R*count), instead of the paper's nominal T = R*2880",
    )  # fmt: skip
    tok.add_argument(
        "--tokens", nargs="+", type=_token_arg, metavar="N|LABEL=N",
        help="actual kept visual-token counts (e.g. from a run) instead of ratios; R is then N / count",
    )  # fmt: skip
    tok.add_argument(
        "--text-tokens", type=int, default=0, metavar="N",
        help="prompt tokens added to the prefill and the decode context (default 0: visual tokens only, "
        "as the paper)",
    )  # fmt: skip
    cost = parser.add_argument_group("cost model")
    cost.add_argument(
        "--causal", action="store_true",
        help="halve the T^2 attention term (FlashAttention-style causal tile skipping); the paper "
        "counts the full square",
    )  # fmt: skip
    cost.add_argument(
        "--kv-bytes", type=float, default=2, metavar="B",
        help="bytes per cached key/value element (default 2, fp16)",
    )  # fmt: skip
    cost.add_argument(
        "--accelerator", action="append", type=_accel_arg, metavar="NAME|NAME:TFLOPS:TBPS",
        help=f"repeatable; a built-in name, 'all', or a custom spec (default: {DEFAULT_ACCELERATOR})",
    )  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the rows as a JSON list of objects")
    out.add_argument(
        "--paper", action="store_true",
        help="add the paper's Tables VI/VII (TFLOPs, KV MB, prefill ms) beside the estimates, the "
        "implied effective TFLOP/s and an explanation of the prefill-time difference",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.text_tokens < 0:
        parser.error("--text-tokens must be >= 0")
    if args.kv_bytes <= 0:
        parser.error("--kv-bytes must be > 0")
    geoms: list[LLMGeometry] = []
    for path in args.config:
        try:
            geoms.append(LLMGeometry.from_config(path))
        except (OSError, KeyError, ValueError) as exc:
            parser.error(f"--config {path}: {exc}")
    if args.model or not geoms:
        geoms += [_BUILTINS[k]() for k in (args.model or ["7b", "13b"])]
    accels = [a for group in (args.accelerator or [[ACCELERATORS[DEFAULT_ACCELERATOR]]]) for a in group]
    accels = list(dict.fromkeys(accels))
    base = NOMINAL_TOKENS
    if args.image_size:
        w, h = args.image_size
        if w <= 0 or h <= 0:
            parser.error("--image-size needs positive W H")
        from llava.mm_utils import anyres_token_count  # imports torch: only when needed

        base = anyres_token_count((w, h), [list(p) for p in V16_GRID_PINPOINTS])
    rows: list[dict[str, Any]] = []
    for geom in geoms:
        rows += efficiency_table(
            geom, args.ratios, base_tokens=base, tokens=args.tokens, text_tokens=args.text_tokens,
            accelerators=accels, kv_bytes=args.kv_bytes, causal=args.causal, method=args.method,
            paper=args.paper,
        )  # fmt: skip
    if args.json:
        json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if args.image_size:
        print(
            f"Image {args.image_size[0]}x{args.image_size[1]}: {base} LLaVA-NeXT visual tokens (v1.6 AnyRes)"
        )
    else:
        print(f"Nominal protocol: T = R x {NOMINAL_TOKENS} visual tokens")
    print(render_main_table(rows))
    if args.paper:
        print()
        compared = [r for r in rows if r.get("paper_prefill_ms") is not None]
        if not compared:
            print("--paper: no row is under the paper's protocol (LLaVA-NeXT-7B/13B, T = R x 2880, no text).")
            return 0
        print("Paper (Tables VI/VII) vs this tool; flash/unfused: this tool's roofline; LLM-Viewer@: the "
              "paper's setting (unfused, LLM-Viewer accounting) at 312 TFLOP/s")  # fmt: skip
        print(render_paper_table(compared))
        print()
        for line in PAPER_NOTE:
            print(line)
        seen: set[str] = set()
        for geom in geoms:
            key = paper_key(geom)
            if key and key not in seen and any(r["model"] == geom.name for r in compared):
                seen.add(key)
                print()
                for line in paper_explanation(geom, accels[0]):
                    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
