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

Modules: :mod:`.geometry` (LLM shapes, accelerators), :mod:`.formulas` (token counts, per-layer
token profiles, FLOPs, KV cache), :mod:`.roofline` (operator-level times), :mod:`.paper` (the
paper's tables and their reproduction), :mod:`.tables` (report rows and text tables),
:mod:`.stages` (what each stage of one run saved), :mod:`.cli`. Everything is pure arithmetic: no torch import unless ``--image-size`` is used.
"""

from llava.analysis.efficiency.cli import build_parser, main
from llava.analysis.efficiency.formulas import (
    NOMINAL_TOKENS,
    V16_GRID_PINPOINTS,
    TokenProfile,
    anyres_image_tokens,
    kv_cache_bytes,
    kv_cache_bytes_per_layer,
    layer_prefill_flops,
    layer_runs,
    nominal_tokens,
    prefill_flops,
    prefill_flops_per_layer,
    uniform_profile,
)
from llava.analysis.efficiency.geometry import (
    ACCELERATORS,
    BUILTIN_GEOMETRIES,
    DEFAULT_ACCELERATOR,
    Accelerator,
    LLMGeometry,
)
from llava.analysis.efficiency.paper import (
    PAPER_AAAI_R10,
    PAPER_NOTE,
    PAPER_TABLES,
    PaperRow,
    paper_convention_kv_mb,
    paper_explanation,
    paper_key,
    paper_reproduction_ms,
    paper_row,
)
from llava.analysis.efficiency.roofline import (
    Op,
    layer_ops,
    lm_head_op,
    op_time,
    roofline,
    roofline_per_layer,
)
from llava.analysis.efficiency.stages import stage_report
from llava.analysis.efficiency.tables import (
    DEFAULT_METHOD,
    DEFAULT_RATIOS,
    efficiency_table,
    format_table,
    in_llm_table,
    render_aaai_table,
    render_main_table,
    render_paper_table,
)

__all__ = [
    "ACCELERATORS",
    "BUILTIN_GEOMETRIES",
    "DEFAULT_ACCELERATOR",
    "DEFAULT_METHOD",
    "DEFAULT_RATIOS",
    "NOMINAL_TOKENS",
    "PAPER_AAAI_R10",
    "PAPER_NOTE",
    "PAPER_TABLES",
    "V16_GRID_PINPOINTS",
    "Accelerator",
    "LLMGeometry",
    "Op",
    "PaperRow",
    "TokenProfile",
    "anyres_image_tokens",
    "build_parser",
    "efficiency_table",
    "format_table",
    "in_llm_table",
    "kv_cache_bytes",
    "kv_cache_bytes_per_layer",
    "layer_ops",
    "layer_prefill_flops",
    "layer_runs",
    "lm_head_op",
    "main",
    "nominal_tokens",
    "op_time",
    "paper_convention_kv_mb",
    "paper_explanation",
    "paper_key",
    "paper_reproduction_ms",
    "paper_row",
    "prefill_flops",
    "prefill_flops_per_layer",
    "render_aaai_table",
    "render_main_table",
    "render_paper_table",
    "roofline",
    "roofline_per_layer",
    "stage_report",
    "uniform_profile",
]
