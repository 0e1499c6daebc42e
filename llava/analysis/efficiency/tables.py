"""Rows of the efficiency report (one per token count and accelerator) and their text tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llava.analysis.efficiency.formulas import (
    NOMINAL_TOKENS,
    kv_cache_bytes,
    kv_cache_bytes_per_layer,
    layer_runs,
    nominal_tokens,
    prefill_flops,
    prefill_flops_per_layer,
)
from llava.analysis.efficiency.geometry import ACCELERATORS, DEFAULT_ACCELERATOR, Accelerator, LLMGeometry
from llava.analysis.efficiency.paper import (
    paper_aaai_r10,
    paper_convention_kv_mb,
    paper_reproduction_ms,
    paper_row,
)
from llava.analysis.efficiency.roofline import roofline, roofline_per_layer

DEFAULT_RATIOS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.1)

DEFAULT_METHOD = "GlobalCom²"


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
            row = _cost_row(geom, label, ratio, count, text_tokens, prefill_flops(geom, n, causal=causal), kv,
                            accel, fused, plain)
            if paper:
                aaai = paper_aaai_r10(geom, _method_key(label), ratio) if base_tokens == NOMINAL_TOKENS else None
                row.update(
                    paper_aaai_tflops=aaai[0] if aaai and not text_tokens else None,
                    paper_aaai_memory_gb=aaai[1] if aaai and not text_tokens else None,
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


def _cost_row(geom: LLMGeometry, method: str, ratio: float, tokens: int, text_tokens: int, flops: float,
              kv: float, accel: Accelerator, fused: Mapping[str, Any], plain: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every report row has (see :func:`efficiency_table`)."""
    return {
        "model": geom.name,
        "method": method,
        "ratio": ratio,
        "tokens": tokens,
        "text_tokens": text_tokens,
        "tflops": flops / 1e12,
        "kv_mb": kv / 1e6,
        "paper_convention": paper_convention_kv_mb(kv),
        "accelerator": accel.name,
        "prefill_ms": fused["prefill_s"] * 1e3,
        "prefill_ms_unfused": plain["prefill_s"] * 1e3,
        "decode_ms": fused["decode_s"] * 1e3,
    }


def _method_key(label: str) -> str:
    """``"GlobalCom²"`` → ``"globalcom2"``: a row label as a registry name."""
    return label.lower().replace("²", "2").replace("-", "")


def in_llm_table(
    geom: LLMGeometry,
    compressors: Sequence[tuple[float | None, Any]],
    *,
    base_tokens: int = NOMINAL_TOKENS,
    text_tokens: int = 0,
    accelerators: Sequence[Accelerator] | None = None,
    kv_bytes: float = 2,
    causal: bool = False,
    paper: bool = False,
) -> list[dict[str, Any]]:
    """Rows of :func:`efficiency_table`'s schema for compressors that prune inside the LLM
    (FastV, SparseVLM, PDrop, pipelines such as ``globalcom2+fastv``), given as ``(R, comp)``.

    The vision stage of a pipeline keeps ``floor(R_v · base_tokens)`` (the paper's nominal
    count); the in-LLM stage's :meth:`~llava.compression.InLLMCompressor.token_profile` then
    gives the visual tokens of every layer (the first layers see every token), and FLOPs, KV
    cache and roofline times are summed layer by layer over ``profile + text_tokens``. Extra
    fields: ``tokens_per_layer`` (visual), ``tokens_last_layer``; with ``paper``:
    ``paper_aaai_tflops`` / ``paper_aaai_memory_gb`` where the AAAI version gives a figure."""
    from llava.compression.in_llm import llm_stage

    accelerators = list(accelerators) if accelerators else [ACCELERATORS[DEFAULT_ACCELERATOR]]
    rows: list[dict[str, Any]] = []
    for ratio, comp in compressors:
        llm = llm_stage(comp)
        vision = getattr(comp, "vision", None)
        entering = base_tokens
        if vision is not None and hasattr(vision, "retention_ratio"):
            entering = nominal_tokens(vision.retention_ratio, base_tokens)
        profile = llm.token_profile(entering, geom.num_hidden_layers)
        if ratio is None:  # a method without a retention ratio (PDrop): the share reaching the last layer
            ratio = profile[-1] / base_tokens
        seq = [t + text_tokens for t in profile]
        kv = kv_cache_bytes_per_layer(geom, seq, kv_bytes)
        for accel in accelerators:
            fused = roofline_per_layer(geom, seq, accel, True, causal=causal, kv_bytes=kv_bytes)
            plain = roofline_per_layer(geom, seq, accel, False, causal=causal, kv_bytes=kv_bytes)
            row = _cost_row(geom, comp.name, ratio, entering, text_tokens,
                            prefill_flops_per_layer(geom, seq, causal=causal), kv, accel, fused, plain)
            row.update(tokens_last_layer=profile[-1], tokens_per_layer=profile, profile=profile_text(geom, profile))
            if paper:
                ref = paper_aaai_r10(geom, comp.name, ratio) if base_tokens == NOMINAL_TOKENS and not text_tokens else None
                row.update(paper_aaai_tflops=ref[0] if ref else None, paper_aaai_memory_gb=ref[1] if ref else None)
            rows.append(row)
    return rows


def profile_text(geom: LLMGeometry, profile: Sequence[int]) -> str:
    """``2880x2 > 288x30``: a per-layer token profile as runs of equal counts."""
    return runs_text(layer_runs(geom, profile))


def runs_text(runs: Sequence[tuple[int | float, int]]) -> str:
    """``(tokens, n_layers)`` runs as ``2880x2 > 288x30``."""
    return " > ".join(f"{t}x{n}" for t, n in runs)


def render_aaai_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The AAAI version's efficiency comparison (7B, R = 10 %) beside this tool's TFLOPs."""
    headers = ["model", "method", "R", "T (per layer)", "TFLOPs", "paper TFLOPs", "paper memory GB"]
    body = [
        [r["model"], r["method"], _pct(r["ratio"]), r.get("profile", str(r["tokens"])), _fmt(r["tflops"]),
         _fmt(r.get("paper_aaai_tflops")), _fmt(r.get("paper_aaai_memory_gb"))]
        for r in rows
    ]
    return format_table(headers, body)


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
    per_layer = any("profile" in r for r in rows)
    if per_layer:
        headers.insert(4, "T per layer")
    body = []
    for r in rows:
        cells = [
            r["model"], r["method"], _pct(r["ratio"]), str(r["tokens"]),
            _fmt(r["tflops"]), _fmt(r["kv_mb"]), _fmt(r["paper_convention"]),
            r["accelerator"], _fmt(r["prefill_ms"]), _fmt(r["prefill_ms_unfused"]), _fmt(r["decode_ms"], 2),
        ]  # fmt: skip
        if "text" in headers:
            cells.insert(4, str(r["text_tokens"]))
        if per_layer:
            cells.insert(4, r.get("profile", f"{r['tokens']}x all"))
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

