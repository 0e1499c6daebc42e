"""Rows of the efficiency report (one per token count and accelerator) and their text tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llava.analysis.efficiency.formulas import NOMINAL_TOKENS, kv_cache_bytes, nominal_tokens, prefill_flops
from llava.analysis.efficiency.geometry import ACCELERATORS, DEFAULT_ACCELERATOR, Accelerator, LLMGeometry
from llava.analysis.efficiency.paper import paper_convention_kv_mb, paper_reproduction_ms, paper_row
from llava.analysis.efficiency.roofline import roofline

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

