"""Per-stage cost of one run: what the vision stage and the in-LLM stage each saved.

:func:`stage_report` turns a prompt's text length and its images' records
(:meth:`llava.compression.CompressedImage.info`) into the tokens each decoder layer processed and
the prefill FLOPs three ways: uncompressed, after the vision stage only, and overall (the
in-LLM stage's per-layer counts, when there is one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llava.analysis.efficiency.formulas import (
    layer_runs,
    prefill_flops,
    prefill_flops_per_layer,
    uniform_profile,
)
from llava.analysis.efficiency.geometry import LLMGeometry


def stage_report(geom: LLMGeometry, text_tokens: int, images: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``text_tokens`` of the prompt (placeholders excluded) and the ``info()`` of each image
    of that prompt → ``{"tokens": {"uncompressed", "vision_stage", "per_layer"}, "tflops":
    {"uncompressed", "vision_stage", "overall"}, "runs": [(tokens, layers), ...]}`` (sequence
    tokens: text + visual)."""
    full = text_tokens + sum(int(i["tokens_uncompressed"]) for i in images)
    after_vision = text_tokens + sum(int(i["tokens"]) for i in images)
    per_layer = list(uniform_profile(geom, after_vision))
    for info in images:
        llm = info.get("llm")
        if llm is not None:
            per_layer = [p - int(info["tokens"]) + int(t) for p, t in zip(per_layer, llm["tokens_per_layer"])]
    return {
        "tokens": {"uncompressed": full, "vision_stage": after_vision, "per_layer": per_layer},
        "runs": layer_runs(geom, per_layer),
        "tflops": {
            "uncompressed": prefill_flops(geom, full) / 1e12,
            "vision_stage": prefill_flops(geom, after_vision) / 1e12,
            "overall": prefill_flops_per_layer(geom, per_layer) / 1e12,
        },
    }
