"""The paper's Tables VI/VII (LLaVA-NeXT efficiency) and how this cost model reproduces them."""

from __future__ import annotations

from typing import NamedTuple

from llava.analysis.efficiency.formulas import nominal_tokens, prefill_flops
from llava.analysis.efficiency.geometry import (
    ACCELERATORS,
    BUILTIN_GEOMETRIES,
    DEFAULT_ACCELERATOR,
    Accelerator,
    LLMGeometry,
)
from llava.analysis.efficiency.roofline import roofline


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

PAPER_AAAI_R10: dict[str, tuple[float | None, float]] = {
    "uncompressed": (41.7, 23.0),
    "sparsevlm": (5.4, 24.2),
    "fastervlm": (3.8, 13.6),
    "globalcom2": (3.8, 13.9),
}
"""The AAAI version's efficiency comparison, LLaVA-NeXT-7B at R = 10 % (uncompressed: R = 1):
method → (prefill TFLOPs, GPU memory GB). Printed as the paper's, never fitted to."""


def paper_aaai_r10(geom: LLMGeometry, method: str, ratio: float) -> tuple[float | None, float] | None:
    """The AAAI figures for ``method`` on this geometry at ``ratio`` (R = 0.1, or 1 for
    ``uncompressed``), if the paper gives them."""
    if paper_key(geom) != "llava-next-7b":
        return None
    name = "uncompressed" if ratio == 1 else method
    if name != "uncompressed" and abs(ratio - 0.1) > 1e-9:
        return None
    return PAPER_AAAI_R10.get(name)



def paper_key(geom: LLMGeometry) -> str | None:
    """The :data:`PAPER_TABLES` key of a geometry shaped like one of the paper's models."""
    for make in BUILTIN_GEOMETRIES.values():
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

