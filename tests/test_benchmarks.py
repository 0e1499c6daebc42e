"""The benchmark harnesses run end to end on tiny settings (timings are never asserted)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from benchmarks import compression_step, run, scoring_overhead
from benchmarks.profiles import PROFILES, profile_config
from llava.compression import build_compressor

STAGES = ("vision", "compression", "splice", "prefill", "decode", "end_to_end")


def test_run_harness_on_tiny_checkpoint(tiny_ckpt, tmp_path):
    out = tmp_path / "bench.json"
    payload = run.main([
        "--model-path", tiny_ckpt, "--methods", "globalcom2", "fastervlm", "--ratios", "0.5",
        "--repeats", "1", "--warmup", "0", "--new-tokens", "2", "--image-size", "1000", "600",
        "--out", str(out), "--quiet",
    ])
    data = json.loads(out.read_text())
    assert data["meta"]["visual_tokens_uncompressed"] == 1948
    assert {"environment", "model", "dtype", "repeats", "memory_method", "note"} <= set(data["meta"])
    labels = [r["label"] for r in data["results"]]
    assert labels == ["none", "globalcom2@0.5", "fastervlm@0.5"]
    for r in data["results"]:
        for s in STAGES:
            assert r["times_ms"][s]["median"] is not None and r["times_ms"][s]["n"] == 1
        assert set(r["speedup"]) == {"vision", "prefill", "decode", "end_to_end"}
        assert r["memory"]["kv_cache_mb"] == pytest.approx(r["memory"]["kv_cache_mb_theory"])
        assert "end_to_end_delta_mb" in r["memory"] and "end_to_end_peak_mb" in r["memory"]
        assert r["sequence_length"] == r["visual_tokens"] + data["meta"]["text_tokens"]
    none, gc2 = data["results"][0], data["results"][1]
    assert none["visual_tokens"] == 1948 and none["theory"]["flops_ratio"] == 1.0
    assert gc2["visual_tokens"] < 1948 and 0 < gc2["theory"]["flops_ratio"] < 1
    assert "budgets" in gc2["image"]
    png = tmp_path / "bench.png"
    assert payload["plot"] == str(png) and Image.open(png).size[0] > 0


def test_bench_profile_is_prefill_heavy_with_real_geometry():
    raw, vision = profile_config("bench", 512)
    assert raw["num_hidden_layers"] >= 12 and raw["hidden_size"] >= 1024
    assert (vision["image_size"], vision["patch_size"]) == (336, 14)
    assert raw["mm_hidden_size"] == vision["hidden_size"]
    assert raw["image_grid_pinpoints"] == [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    assert PROFILES["bench-clipl"].vision["num_hidden_layers"] == 24


@pytest.mark.parametrize("size", [(672, 672), (1000, 600), (600, 1000), (1500, 400), (400, 1500), (336, 336)])
@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.1])
def test_release_loop_equals_reference_layout(size, ratio):
    layout, views, newline, scores = compression_step.make_inputs(size, 8, torch.float32, "cpu", seed=3)
    loop = compression_step.release_loop_compress(views, newline, layout, scores, ratio)
    ours = build_compressor("globalcom2", retention_ratio=ratio, layout="reference")
    ref = ours.compress(views, newline, layout, scores).tokens
    assert loop.dtype == torch.float16
    assert torch.equal(loop, ref.to(torch.float16))


def test_compression_step_runs(tmp_path):
    out = tmp_path / "cs.json"
    compression_step.main([
        "--dim", "32", "--ratios", "0.25", "--repeats", "2", "--warmup", "1", "--baseline-repeats", "1",
        "--out", str(out),
    ])
    data = json.loads(out.read_text())
    methods = {(r["method"], r["layout"]) for r in data["results"]}
    assert ("none", "faithful") in methods and ("globalcom2", "reference") in methods
    assert len(data["results"]) == 2 * 2 * (3 * 2 + 1)  # images × dtypes × (methods × layouts + none)
    assert all(c["matches_globalcom2_reference"] for c in data["release_loop_checks"])
    assert len(data["release_loop"]) == 4 and len(data["target"]["results"]) == 2
    gc2 = [r for r in data["results"] if r["method"] == "globalcom2"]
    assert all(r["release_loop_speedup"] is not None and r["ms"]["n"] == 2 for r in gc2)


def test_scoring_overhead_runs(tmp_path):
    out = tmp_path / "so.json"
    scoring_overhead.main([
        "--layers", "2", "--width", "32", "--heads", "2", "--mlp", "64", "--views", "2", "--repeats", "1",
        "--warmup", "0", "--scorer-repeats", "1", "--out", str(out),
    ])
    data = json.loads(out.read_text())
    rows = {(r["kind"], r["layer"]) for r in data["results"]}
    assert rows == {("none", None), ("none (again)", None), ("cls_logits", -1), ("cls_logits", -2),
                    ("cls_softmax", -1), ("cls_softmax", -2)}
    for r in data["results"][2:]:
        assert {"overhead_pct_paired_median", "scorer_alone_pct", "target_met"} <= set(r)
    assert data["meta"]["tower"]["num_hidden_layers"] == 2 and "noise_floor_pct" in data["meta"]


def test_run_harness_with_in_llm_methods(tiny_ckpt, tmp_path):
    """FastV (K = 1 on the 2-layer LLM) and its materialised-attention variant: per-layer counts,
    the KV cache and FLOPs summed layer by layer (memory is the benchmark's business, not a test's)."""
    payload = run.main([
        "--model-path", tiny_ckpt, "--methods", "fastv", "--ratios", "0.25", "--attention-maps-at", "0.25",
        "--repeats", "1", "--warmup", "0", "--new-tokens", "2", "--image-size", "672", "336",
        "--out", str(tmp_path / "b.json"), "--quiet", "--no-plot", "--no-memory",
    ])
    rows = {r["label"]: r for r in payload["results"]}
    assert list(rows) == ["none", "fastv@0.25", "fastv@0.25 map"]
    for label in ("fastv@0.25", "fastv@0.25 map"):
        r = rows[label]
        n = r["visual_tokens"]
        assert r["compressor"]["k"] == 1 and r["visual_tokens_per_layer"] == [n, round(0.25 * n)]
        assert r["memory"]["kv_cache_mb"] == pytest.approx(r["memory"]["kv_cache_mb_theory"])
        assert r["memory"]["kv_cache_mb"] < rows["none"]["memory"]["kv_cache_mb"]
        assert 0.5 < r["theory"]["flops_ratio"] < 1
    assert rows["fastv@0.25"]["visual_tokens_per_layer"] == rows["fastv@0.25 map"]["visual_tokens_per_layer"]


def test_drop_layers_scale_to_a_shallower_llm():
    assert run.scaled_layers((2, 6, 15, 19), 12, 0, 10) == (1, 2, 6, 7)
    assert run.scaled_layers((8, 16, 24), 12, 1, 11) == (3, 6, 9)
    assert run.scaled_layers((8, 16, 24), 2, 1, 1) == (1,)
    assert run.scaled_layers((2, 6, 15, 19), 40, 0, 38) == (2, 6, 15, 19)
    cfg = run.Config("pdrop", None, num_layers=2)
    assert cfg.compressor().layers == (1,) and cfg.compressor().ratios == (0.5,)
