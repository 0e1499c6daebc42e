"""Tests of llava.analysis.efficiency: the paper's Tables VI/VII and the roofline model."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from llava.analysis import efficiency as eff
from llava.analysis.efficiency import (
    ACCELERATORS,
    PAPER_TABLES,
    Accelerator,
    LLMGeometry,
    efficiency_table,
    kv_cache_bytes,
    paper_convention_kv_mb,
    prefill_flops,
    roofline,
)

RATIOS = (1.0, 0.75, 0.5, 0.25, 0.1)
G7 = LLMGeometry.llava_next_7b()
G13 = LLMGeometry.llava_next_13b()
A100 = ACCELERATORS["A100-80GB"]
REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv: str) -> str:
    assert eff.main(list(argv)) == 0
    return capsys.readouterr().out


def run_json(capsys, *argv: str) -> list[dict]:
    return json.loads(run_cli(capsys, "--json", *argv))


# ----------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize("ratio", RATIOS)
def test_7b_tflops_match_paper_exactly(ratio):
    T = eff.nominal_tokens(ratio)
    assert T == round(ratio * 2880)
    assert round(prefill_flops(G7, T) / 1e12, 1) == PAPER_TABLES["llava-next-7b"][ratio].tflops


@pytest.mark.parametrize("ratio", RATIOS)
def test_13b_tflops_close_to_paper(ratio):
    T = eff.nominal_tokens(ratio)
    assert abs(prefill_flops(G13, T) / 1e12 - PAPER_TABLES["llava-next-13b"][ratio].tflops) <= 0.2
    # with LLM-Viewer's elementwise operators the 13B column is exact too
    assert (
        round(prefill_flops(G13, T, elementwise=True) / 1e12, 1)
        == PAPER_TABLES["llava-next-13b"][ratio].tflops
    )


def test_paper_formula_literal():
    T, L, d, m = 2880, 32, 4096, 11008
    assert prefill_flops(G7, T) == pytest.approx(L * (8 * T * d**2 + 4 * T**2 * d + 6 * T * d * m), rel=1e-12)


def test_gqa_reduces_to_mha_and_scales_kv_term():
    mha = replace(G7, num_key_value_heads=32)
    assert mha == G7
    for T in (1, 288, 2880):
        assert prefill_flops(mha, T) == prefill_flops(G7, T)
        assert kv_cache_bytes(mha, T) == kv_cache_bytes(G7, T)
    gqa = replace(G7, num_key_value_heads=8)
    T, L, d = 1000, 32, 4096
    # only the k/v projections shrink: 4·T·d·(d - d_kv) per layer
    assert prefill_flops(G7, T) - prefill_flops(gqa, T) == pytest.approx(L * 4 * T * d * (d - 1024))
    assert kv_cache_bytes(gqa, T) * 4 == kv_cache_bytes(G7, T)
    with pytest.raises(ValueError):
        replace(G7, num_key_value_heads=5)


def test_causal_halves_quadratic_term():
    T, L, d = 2880, 32, 4096
    assert prefill_flops(G7, T) - prefill_flops(G7, T, causal=True) == pytest.approx(L * 2 * T * T * d)


# ----------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("geom", [G7, G13], ids=["7b", "13b"])
def test_kv_paper_convention_reproduces_paper(geom):
    for ratio, row in PAPER_TABLES[geom.name].items():
        nbytes = kv_cache_bytes(geom, eff.nominal_tokens(ratio))
        assert nbytes == 2 * geom.num_hidden_layers * geom.hidden_size * 2 * eff.nominal_tokens(ratio)
        assert paper_convention_kv_mb(nbytes) == pytest.approx(row.kv_mb, abs=1e-9)


def test_kv_exact_values():
    assert kv_cache_bytes(G7, 1440) / 1e6 == pytest.approx(754.97, abs=0.01)
    assert kv_cache_bytes(G7, 2880, bytes_per_value=1) * 2 == kv_cache_bytes(G7, 2880)
    assert paper_convention_kv_mb(50_000_000) == 50.0


# ----------------------------------------------------------------------------- roofline


@pytest.mark.parametrize("geom", [G7, G13], ids=["7b", "13b"])
@pytest.mark.parametrize("accel", list(ACCELERATORS.values()), ids=list(ACCELERATORS))
def test_roofline_flash_not_slower_and_monotone(geom, accel):
    prev = None
    for ratio in RATIOS:  # decreasing R
        T = eff.nominal_tokens(ratio)
        fused = roofline(geom, T, accel, flash=True)
        plain = roofline(geom, T, accel, flash=False)
        assert fused["prefill_s"] <= plain["prefill_s"]
        assert fused["prefill_bytes"] <= plain["prefill_bytes"]
        assert fused["decode_s"] <= plain["decode_s"] + 1e-12
        # the roofline time is at least the pure-compute and the pure-memory floor
        assert fused["prefill_s"] >= fused["prefill_flops"] / accel.peak_flops * (1 - 1e-12)
        assert fused["decode_s"] >= fused["decode_bytes"] / accel.bandwidth * (1 - 1e-12)
        assert 0 <= fused["prefill_compute_bound"] <= 1
        if prev is not None:
            assert fused["prefill_s"] < prev[0]
            assert plain["prefill_s"] < prev[1]
            assert fused["decode_s"] < prev[2]
        prev = (fused["prefill_s"], plain["prefill_s"], fused["decode_s"])


def test_roofline_breakdown_and_decode():
    r = roofline(G7, 2880, A100, flash=False)
    ops = r["prefill_ops"]
    assert {"q_proj", "k_proj", "qk_matmul", "softmax", "sv_matmul", "mlp_act", "lm_head"} <= set(ops)
    assert sum(o["time_s"] for o in ops.values()) == pytest.approx(r["prefill_s"])
    assert ops["softmax"]["bound"] == "memory"
    assert ops["gate_proj"]["bound"] == "compute"
    assert "fused_attention" in roofline(G7, 2880, A100)["prefill_ops"]
    # decode at batch 1 is memory bound: ~weights (fp16, without embeddings) + KV cache
    weights = 2 * (32 * (4 * 4096**2 + 3 * 4096 * 11008) + 4096 * 32000)
    expected = (weights + kv_cache_bytes(G7, 2880)) / A100.bandwidth
    assert r["decode_s"] == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("geom,accel", [(G7, "A100-40GB"), (G13, "A100-80GB")], ids=["7b", "13b"])
def test_paper_prefill_ms_reproduced_by_llm_viewer_setting(geom, accel):
    for ratio, row in PAPER_TABLES[geom.name].items():
        ms = eff.paper_reproduction_ms(geom, eff.nominal_tokens(ratio), ACCELERATORS[accel])
        assert round(ms, 1) == row.prefill_ms


def test_accelerator_parse():
    assert Accelerator.parse("h100-sxm") is ACCELERATORS["H100-SXM"]
    a = Accelerator.parse("MyChip:100:1.5")
    assert (a.name, a.peak_flops, a.bandwidth) == ("MyChip", 100e12, 1.5e12)
    for bad in ("nope", "x:1", "x:a:1", "x:0:1"):
        with pytest.raises(ValueError):
            Accelerator.parse(bad)


# ----------------------------------------------------------------------------- geometry from config


def test_from_config_file_and_dict(tmp_path):
    cfg = {
        "_name_or_path": "org/tiny-llava",
        "model_type": "llava",
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 176,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1000,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    g = LLMGeometry.from_config(path)
    assert (g.name, g.num_hidden_layers, g.hidden_size, g.intermediate_size) == ("tiny-llava", 2, 64, 176)
    assert (g.num_attention_heads, g.num_key_value_heads, g.head_dim, g.kv_dim) == (4, 2, 16, 32)
    assert LLMGeometry.from_config(tmp_path) == g  # a directory works too
    assert LLMGeometry.from_config(cfg) == g
    # transformers' LlavaNext format: Llama fields under text_config, defaults filled in
    hf = LLMGeometry.from_config({"model_type": "llava_next", "text_config": {"model_type": "llama"}})
    assert hf.shape_key() == G7.shape_key()
    assert eff.paper_key(hf) == "llava-next-7b"
    with pytest.raises(KeyError):
        LLMGeometry.from_config({"hidden_size": 64})


def test_cli_config(tmp_path, capsys):
    cfg = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 176, "num_attention_heads": 4}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    rows = run_json(capsys, "--config", str(path), "--ratios", "1", "0.5")
    assert [r["tokens"] for r in rows] == [2880, 1440]
    g = LLMGeometry.from_config(path)
    assert rows[0]["model"] == g.name
    assert rows[0]["tflops"] == pytest.approx(prefill_flops(g, 2880) / 1e12)
    assert rows[1]["kv_mb"] == pytest.approx(2 * 2 * 64 * 2 * 1440 / 1e6)


# ----------------------------------------------------------------------------- CLI


def test_cli_default_table(capsys):
    out = run_cli(capsys, "--model", "7b")
    for text in ("41.7", "30.4", "19.7", "9.6", "3.8", "1536.0", "755.0", "A100-80GB", "prefill ms (flash)"):
        assert text in out
    assert "llava-next-13b" not in out


def test_cli_json_fields(capsys):
    rows = run_json(capsys, "--accelerator", "A100-80GB", "--accelerator", "X:100:1")
    assert len(rows) == 2 * 5 * 2  # models × ratios × accelerators
    fields = {
        "model", "method", "ratio", "tokens", "text_tokens", "tflops", "kv_mb", "paper_convention",
        "accelerator", "prefill_ms", "prefill_ms_unfused", "decode_ms",
    }  # fmt: skip
    for r in rows:
        assert fields <= set(r)
        assert r["prefill_ms"] <= r["prefill_ms_unfused"]
    r7 = [r for r in rows if r["model"] == "llava-next-7b" and r["accelerator"] == "A100-80GB"]
    assert [round(r["tflops"], 1) for r in r7] == [41.7, 30.4, 19.7, 9.6, 3.8]
    assert [r["paper_convention"] for r in r7] == [1536.0, 1126.4, 755.0, 377.0, 151.0]
    assert [r["method"] for r in r7] == ["uncompressed"] + ["GlobalCom²"] * 4
    assert {r["accelerator"] for r in rows} == {"A100-80GB", "X"}


def test_cli_paper(capsys):
    out = run_cli(capsys, "--paper")
    for text in ("170.7", "295.1", "13.3", "25.0", "implied TFLOP/s", "Why the paper", "A100-40GB"):
        assert text in out
    rows = run_json(capsys, "--paper", "--model", "13b")
    assert [r["paper_prefill_ms"] for r in rows] == [295.1, 211.6, 134.6, 64.1, 25.0]
    assert [round(r["llm_viewer_ms_a100_80gb"], 1) for r in rows] == [295.1, 211.6, 134.6, 64.1, 25.0]
    assert rows[0]["paper_implied_tflops_s"] == pytest.approx(prefill_flops(G13, 2880) / 0.2951 / 1e12)
    # off the paper's protocol the paper fields are empty
    rows = run_json(capsys, "--paper", "--model", "7b", "--text-tokens", "50", "--ratios", "1")
    assert rows[0]["paper_prefill_ms"] is None
    lines = eff.paper_explanation(G7)
    assert any("A100-40GB" in line and "reproduced" in line for line in lines)


def test_cli_image_size_count_flows_through(capsys):
    rows = run_json(capsys, "--model", "7b", "--image-size", "672", "672", "--ratios", "1", "0.25", "0.1")
    assert [r["tokens"] for r in rows] == [2928, 732, 292]  # floor(R · 2928)
    assert rows[0]["tflops"] == pytest.approx(prefill_flops(G7, 2928) / 1e12)
    assert rows[0]["kv_mb"] == pytest.approx(kv_cache_bytes(G7, 2928) / 1e6)
    out = run_cli(capsys, "--model", "7b", "--image-size", "672", "672", "--ratios", "1")
    assert "2928" in out


def test_cli_tokens_and_text(capsys):
    rows = run_json(
        capsys, "--model", "7b", "--image-size", "672", "672", "--tokens", "2928", "FastV=700", "650",
        "--method", "mine", "--text-tokens", "40",
    )  # fmt: skip
    assert [(r["method"], r["tokens"]) for r in rows] == [
        ("uncompressed", 2928),
        ("FastV", 700),
        ("mine", 650),
    ]
    assert rows[1]["ratio"] == pytest.approx(700 / 2928)
    assert rows[1]["tflops"] == pytest.approx(prefill_flops(G7, 740) / 1e12)
    assert rows[1]["kv_mb"] == pytest.approx(kv_cache_bytes(G7, 740) / 1e6)
    out = run_cli(capsys, "--model", "7b", "--tokens", "500", "--text-tokens", "40")
    assert "text" in out.splitlines()[1]


def test_cli_options_change_results(capsys):
    base = run_json(capsys, "--model", "7b", "--ratios", "1")[0]
    causal = run_json(capsys, "--model", "7b", "--ratios", "1", "--causal")[0]
    int8 = run_json(capsys, "--model", "7b", "--ratios", "1", "--kv-bytes", "1")[0]
    assert causal["tflops"] < base["tflops"] and causal["prefill_ms"] < base["prefill_ms"]
    assert int8["kv_mb"] == pytest.approx(base["kv_mb"] / 2)
    assert int8["decode_ms"] < base["decode_ms"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--ratios", "0"],
        ["--ratios", "1.5"],
        ["--tokens", "0"],
        ["--accelerator", "bogus"],
        ["--model", "70b"],
    ],
)
def test_cli_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        eff.main(argv)
    assert exc.value.code == 2


def test_efficiency_table_nominal_rounding():
    rows = efficiency_table(G7, [0.7, 0.3])
    assert [r["tokens"] for r in rows] == [2016, 864]


def test_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "llava.analysis.efficiency", "--model", "7b", "--ratios", "0.5", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(proc.stdout)[0]["tokens"] == 1440


def test_cli_video_frames_times_tokens_per_frame(capsys):
    from llava.compression import VideoLayout, build_compressor

    rows = run_json(capsys, "--model", "7b", "--frames", "32", "--tokens-per-frame", "196", "--ratios", "1", "0.25", "0.1")
    assert [r["tokens"] for r in rows] == [6272, 1568, 627]  # floor(R · F · N)
    for r, ratio in zip(rows, (1, 0.25, 0.1)):  # what the video methods keep with budget="exact"
        assert r["tokens"] == build_compressor("globalcom2", retention_ratio=ratio, budget="exact").token_count(
            VideoLayout(32, 14, 14))
    assert rows[1]["tflops"] == pytest.approx(prefill_flops(G7, 1568) / 1e12)
    out = run_cli(capsys, "--model", "7b", "--frames", "8", "--tokens-per-frame", "300", "--ratios", "1")
    assert out.splitlines()[0] == "Video: 8 frames x 300 tokens = 2400 visual tokens, T = floor(R x 2400)"
    for argv in (["--frames", "8"], ["--frames", "8", "--tokens-per-frame", "0"],
                 ["--frames", "8", "--tokens-per-frame", "196", "--image-size", "10", "10"]):
        with pytest.raises(SystemExit) as exc:
            eff.main(argv)
        assert exc.value.code == 2
