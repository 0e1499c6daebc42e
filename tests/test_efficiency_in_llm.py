"""The efficiency tool's in-LLM methods: per-layer token profiles worked by hand, FLOPs and KV
summed layer by layer, the AAAI figures printed beside (never fitted), and the CLI flags."""

from __future__ import annotations

import json

import pytest

from llava.analysis.efficiency import (
    LLMGeometry,
    in_llm_table,
    kv_cache_bytes_per_layer,
    main,
    prefill_flops,
    prefill_flops_per_layer,
)
from llava.compression import build_compressor

G7 = LLMGeometry.llava_next_7b()


def test_profiles_by_hand():
    assert build_compressor("fastv", retention_ratio=0.1).token_profile(2880, 32) == [2880] * 2 + [288] * 30
    assert build_compressor("fastv", retention_ratio=0.5, k=3).token_profile(2929, 32) == [2929] * 3 + [1464] * 29
    assert build_compressor("pdrop").token_profile(2880, 32) == [2880] * 8 + [1440] * 8 + [720] * 8 + [360] * 8
    # SparseVLM, full-rank raters, R = 0.1: keep ⌊0.1·2880⌋ = 288 at layer 2's output, recycle
    # ⌊0.3·2592⌋+1 = 778 dropped into ⌊77.8⌋+1 = 78 clusters → 366; then 78 dropped → 24 → 3
    # clusters → 291; then 3 → 1 → 1 → 289; then 1 → 1 → 1 → 289.
    want = [2880] * 3 + [366] * 4 + [291] * 9 + [289] * 4 + [289] * 12
    assert build_compressor("sparsevlm", retention_ratio=0.1).token_profile(2880, 32) == want
    # without recycling the cap n_v − 1 (the release's) drops one more token at each later stage
    assert build_compressor("sparsevlm", retention_ratio=0.1, recycle=False).token_profile(2880, 32)[-1] == 285
    with pytest.raises(ValueError, match="rank"):
        build_compressor("sparsevlm", scale=13.5).token_profile(2880, 32)


def test_in_llm_rows_sum_costs_layer_by_layer():
    fastv = build_compressor("fastv", retention_ratio=0.1)
    pipe = build_compressor("globalcom2+fastv", retention_ratio=0.1)
    rows = in_llm_table(G7, [(0.1, fastv), (0.1, pipe)], text_tokens=10, paper=True)
    f, p = rows
    assert f["tokens_per_layer"] == [2880] * 2 + [288] * 30 and f["profile"] == "2880x2 > 288x30"
    seq = [t + 10 for t in f["tokens_per_layer"]]
    assert f["tflops"] == pytest.approx(prefill_flops_per_layer(G7, seq) / 1e12)
    assert f["kv_mb"] == pytest.approx(kv_cache_bytes_per_layer(G7, seq) / 1e6)
    assert f["tflops"] == pytest.approx((2 * prefill_flops(G7, 2890) + 30 * prefill_flops(G7, 298)) / 32 / 1e12)
    assert p["tokens"] == 910 and p["tokens_per_layer"][-1] == 288  # √0.1 of 2880, then √0.1 of 910
    assert f["paper_aaai_tflops"] is None  # with text tokens the paper's protocol does not apply


def test_cli_in_llm_rows_and_the_aaai_figures(capsys):
    assert main(["--model", "7b", "--compression", "sparsevlm", "--ratios", "1", "0.1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["uncompressed", "sparsevlm"]
    assert rows[1]["tflops"] == pytest.approx(prefill_flops_per_layer(G7, rows[1]["tokens_per_layer"]) / 1e12)
    assert main(["--model", "7b", "--paper", "--ratios", "1"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("AAAI"):]
    for name, paper in (("uncompressed", "41.7  23.0"), ("GlobalCom²", "3.8  13.9"), ("FasterVLM", "3.8  13.6"),
                        ("sparsevlm", "5.4  24.2")):
        line = next(x for x in table.splitlines() if x.startswith("llava-next-7b") and f" {name} " in x)
        assert " ".join(line.split()).endswith(" ".join(paper.split()))
    assert "fastv" in table and "2880x2 > 288x30" in table
    with pytest.raises(SystemExit):
        main(["--compression", "fastv", "--retention-ratio", "0.1"])
    with pytest.raises(SystemExit):
        main(["--compression", "fastv", "--tau", "5"])
