"""The GlobalCom² paper's published figures (LLaVA-NeXT), as plain data.

Benchmark keys and order follow :data:`BENCHMARK_ORDER` (the columns of the paper's Table II);
MME is the raw perception score.  ``Average`` in the paper is the mean over the ten benchmarks of
score / uncompressed score, in percent; :func:`relative_average` recomputes it.
"""

from __future__ import annotations

from collections.abc import Mapping

BENCHMARK_ORDER = ["vqav2", "gqa", "vizwiz", "sqa", "textvqa", "pope", "mme", "mmbench", "mmbench_cn", "mmvet"]
COLUMN_NAMES = {
    "vqav2": "VQAv2", "gqa": "GQA", "vizwiz": "VizWiz", "sqa": "SQA", "textvqa": "TextVQA", "pope": "POPE",
    "mme": "MME", "mmbench": "MMB", "mmbench_cn": "MMB-CN", "mmvet": "MM-Vet",
}


def _row(*values: float) -> dict[str, float]:
    assert len(values) == len(BENCHMARK_ORDER)
    return dict(zip(BENCHMARK_ORDER, values))


# ---- Table II, LLaVA-NeXT-7B (uncompressed = 2880 nominal visual tokens)
UNCOMPRESSED_7B = _row(81.8, 64.2, 57.6, 70.1, 61.3, 86.5, 1519.0, 67.4, 60.6, 43.9)
GLOBALCOM2_7B = {
    0.75: _row(81.3, 63.8, 56.5, 68.7, 59.4, 87.8, 1548.4, 68.0, 60.6, 40.6),
    0.50: _row(80.6, 63.9, 56.5, 68.5, 59.5, 88.1, 1552.9, 67.6, 60.5, 40.4),
    0.25: _row(79.4, 61.4, 55.7, 68.1, 59.2, 87.6, 1493.5, 65.9, 58.0, 40.7),
    0.10: _row(76.7, 57.1, 54.6, 68.7, 57.2, 83.8, 1365.5, 61.8, 53.4, 36.4),
}
# Published Average column (%), keyed method -> retention ratio.
AVERAGES_7B: dict[str, dict[float, float]] = {
    "uncompressed": {1.0: 100.0},
    "globalcom2": {0.75: 98.9, 0.50: 98.7, 0.25: 96.9, 0.10: 91.8},
    "fastervlm": {0.75: 98.0, 0.50: 98.2, 0.25: 95.6, 0.10: 90.3},
    "fastv": {0.75: 98.0, 0.50: 97.3, 0.25: 95.8, 0.10: 87.8},
    "sparsevlm": {0.75: 96.3, 0.50: 95.5, 0.25: 93.1, 0.10: 83.2},
}

#: The peers of Table II (7B) whose per-benchmark figures are not recorded here, only their Averages.
PAPER_PEERS_7B = ("fastv", "sparsevlm", "fastervlm")

# ---- Table III, LLaVA-NeXT-13B
UNCOMPRESSED_13B = _row(82.8, 65.4, 60.5, 73.5, 64.3, 86.2, 1575.9, 70.0, 64.2, 48.4)
AVERAGES_13B: dict[str, dict[float, float]] = {
    "uncompressed": {1.0: 100.0},
    "globalcom2": {0.75: 99.5, 0.50: 98.5, 0.25: 95.9, 0.10: 90.2},
    "fastervlm": {0.75: 99.1, 0.50: 97.7, 0.25: 95.6, 0.10: 88.5},
}

# ---- Ablations, LLaVA-NeXT-7B at R = 25 % (Average, %)
ABLATION_CROP_BUDGET_7B_R25 = {"uniform": 94.6, "n_top_k": 93.7, "softmax_max": 95.2, "softmax_sum": 96.1}
ABLATION_TOKEN_SCORE_7B_R25 = {"local": 96.1, "global": 95.0, "global_local": 96.9}

# ---- Tables VI/VII, efficiency of the visual-token prefill (A100-80GB)
# retention ratio -> (TFLOPs, KV cache MB, prefill ms)
EFFICIENCY_7B = {1.0: (41.7, 1536.0, 170.7), 0.75: (30.4, 1126.4, 119.9), 0.50: (19.7, 755.0, 74.5),
                 0.25: (9.6, 377.0, 34.6), 0.10: (3.8, 151.0, 13.3)}
EFFICIENCY_13B = {1.0: (80.0, 2457.6, 295.1), 0.75: (58.7, 1843.2, 211.6), 0.50: (38.3, 1228.8, 134.6),
                  0.25: (18.7, 590.0, 64.1), 0.10: (7.4, 236.0, 25.0)}


def relative_average(scores: Mapping[str, float], baseline: Mapping[str, float]) -> tuple[float | None, int]:
    """Mean over the benchmarks present in both of ``score / baseline * 100``; returns (avg, count)."""
    rel = [100.0 * scores[b] / baseline[b] for b in BENCHMARK_ORDER
           if scores.get(b) is not None and baseline.get(b)]
    if not rel:
        return None, 0
    return sum(rel) / len(rel), len(rel)


def paper_rows(model: str = "7b") -> list[dict]:
    """Rows ``{"model", "method", "retention_ratio", "scores", "published_average"}`` of the paper.

    ``"7b"``: the uncompressed row and GlobalCom² at every ratio (Table II); ``"13b"``: the
    uncompressed row (Table III gives only Averages for the compressed 13B runs).
    """
    if model.lower() == "7b":
        rows = [{"model": "llava-v1.6-vicuna-7b", "method": "uncompressed", "retention_ratio": 1.0,
                 "scores": dict(UNCOMPRESSED_7B), "published_average": 100.0}]
        for r, sc in GLOBALCOM2_7B.items():
            rows.append({"model": "llava-v1.6-vicuna-7b", "method": "globalcom2", "retention_ratio": r,
                         "scores": dict(sc), "published_average": AVERAGES_7B["globalcom2"][r]})
        return rows
    if model.lower() == "13b":
        return [{"model": "llava-v1.6-vicuna-13b", "method": "uncompressed", "retention_ratio": 1.0,
                 "scores": dict(UNCOMPRESSED_13B), "published_average": 100.0}]
    raise ValueError(f"unknown model {model!r}; expected '7b' or '13b'")


def paper_baseline(model: str) -> dict[str, float]:
    return dict(UNCOMPRESSED_13B if "13b" in model.lower() else UNCOMPRESSED_7B)
