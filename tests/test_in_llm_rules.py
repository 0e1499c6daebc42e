"""FastV, SparseVLM and PDrop as pure rules (hand-worked cases, a loop oracle for the
recycling clusters), their configurations, pipelines and the shared flags."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from llava.compression import FastV, PDrop, Pipeline, SparseVLM, build_compressor, option_names
from llava.compression import functional as Fn
from llava.compression.cli import add_compression_args, compressor_from_args
from llava.compression.in_llm import (
    LLMStage,
    TokenState,
    dpc_knn_clusters,
    keep_top_visual,
    llm_stage,
    merge_clusters,
    select_raters,
)
from llava.compression.layout import AnyResLayout


def state(visual: list[list[int]], valid: list[list[int]] | None = None, n0: list[int] | None = None) -> TokenState:
    v = torch.tensor(visual, dtype=torch.bool)
    ok = torch.ones_like(v) if valid is None else torch.tensor(valid, dtype=torch.bool)
    return TokenState(v, ok, torch.tensor(n0 if n0 is not None else v.sum(1).tolist()))


# ----------------------------------------------------------------------------- defaults


def test_defaults_are_the_releases():
    assert FastV() == FastV(retention_ratio=0.5, k=2)
    assert FastV().stages() == (LLMStage(1, 2),)  # layer K−1's attention, drop before layer K
    assert SparseVLM() == SparseVLM(retention_ratio=0.25, layers=(2, 6, 15, 19), scale=None, bias=0.0, recycle=True)
    assert SparseVLM().stages() == (LLMStage(2, 3), LLMStage(6, 7), LLMStage(15, 16), LLMStage(19, 20))
    assert (SparseVLM.RECYCLE_SHARE, SparseVLM.CLUSTER_SHARE) == (0.3, 0.1)
    assert PDrop() == PDrop(layers=(8, 16, 24), ratios=(0.5, 0.25, 0.125))
    assert PDrop().stages() == (LLMStage(8, 8), LLMStage(16, 16), LLMStage(24, 24))


def test_bad_configurations_are_refused():
    for bad in (dict(k=0), dict(retention_ratio=0.0), dict(k=1.5)):
        with pytest.raises(ValueError):
            FastV(**bad)
    with pytest.raises(ValueError, match="one ratio per layer"):
        PDrop(layers=(2, 4), ratios=(0.5,))
    with pytest.raises(ValueError, match="must not increase"):
        PDrop(layers=(2, 4), ratios=(0.25, 0.5))
    with pytest.raises(ValueError, match="increasing order"):
        SparseVLM(layers=(6, 2))
    with pytest.raises(ValueError, match="layer 0"):
        PDrop(layers=(0,), ratios=(0.5,))
    with pytest.raises(ValueError, match="decoder layers"):
        SparseVLM().check_depth(16)  # layer 19 does not exist
    SparseVLM().check_depth(32)
    assert SparseVLM(layers="2, 6").layers == (2, 6) and PDrop(layers="4,8", ratios="0.5,0.2").ratios == (0.5, 0.2)


# ----------------------------------------------------------------------------- FastV / PDrop


def test_fastv_keeps_round_half_even_of_r_n_by_the_query_row():
    # row 0: 5 visual tokens at positions 1..5, R = 0.5 → round(2.5) = 2; row 1: 7 → round(3.5) = 4.
    attn = torch.tensor([[[0.1, 0.3, 0.05, 0.3, 0.2, 0.0, 0.05, 0.0, 0.0]],
                         [[0.0, 0.1, 0.2, 0.3, 0.05, 0.05, 0.1, 0.2, 0.0]]])
    st = state([[0, 1, 1, 1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1, 1, 1, 0]])
    keep, _ = FastV(retention_ratio=0.5, k=2).keep(0, attn, torch.ones(2, 1, dtype=torch.bool), st, torch.zeros(2, 9, 4))
    # row 0: scores of 1..5 = .3 .05 .3 .2 0 → the two .3 (ties to the earlier token: 1 and 3)
    assert keep[0].nonzero().flatten().tolist() == [0, 1, 3, 6, 7, 8]
    # row 1: 1..7 = .1 .2 .3 .05 .05 .1 .2 → top 4: 3 (.3), 2 and 7 (.2), then 1 (.1, before 6)
    assert keep[1].nonzero().flatten().tolist() == [0, 1, 2, 3, 7, 8]


def test_pdrop_floors_each_stage_ratio_of_the_entering_count():
    attn = torch.arange(10, dtype=torch.float32)[None, None]  # later tokens score higher
    st = state([[0] + [1] * 8 + [0]], n0=[8])
    pd = PDrop(layers=(1, 2), ratios=(0.5, 0.3))
    keep0, _ = pd.keep(0, attn, torch.ones(1, 1, dtype=torch.bool), st, torch.zeros(1, 10, 2))
    keep1, _ = pd.keep(1, attn, torch.ones(1, 1, dtype=torch.bool), st, torch.zeros(1, 10, 2))
    assert keep0[0].nonzero().flatten().tolist() == [0, 5, 6, 7, 8, 9]  # ⌊8·0.5⌋ = 4
    assert keep1[0].nonzero().flatten().tolist() == [0, 7, 8, 9]  # ⌊8·0.3⌋ = 2 (of the original 8)


def test_keep_top_visual_respects_padding_and_keeps_all_text():
    st = state([[0, 0, 1, 1, 0]], valid=[[0, 1, 1, 1, 1]])
    keep = keep_top_visual(torch.tensor([[9.0, 0, 1, 2, 0]]), st, torch.tensor([1]))
    assert keep[0].tolist() == [False, True, False, True, True]


# ----------------------------------------------------------------------------- SparseVLM


def test_raters_are_the_text_tokens_the_image_attends_to_more_than_average():
    # two visual tokens v, three candidates t; m_t = mean_v softmax_t(v·t), raters m_t > mean m.
    v = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    embeds = torch.cat([v, t])[None]
    logits = v @ t.T  # [[2, 0, 0], [0, 2, 0]]
    m = logits.softmax(-1).mean(0)  # [.4404, .4404, .1192] by hand: e²/(e²+2) averaged with (1)/(e²+2)
    assert m[0] > m.mean() and m[1] > m.mean() and m[2] < m.mean()
    raters = select_raters(embeds, torch.tensor([[1, 1, 0, 0, 0]], dtype=torch.bool),
                           torch.tensor([[0, 0, 1, 1, 1]], dtype=torch.bool))
    assert raters[0].tolist() == [False, False, True, True, False]


def _sparse_keep(comp, attn, visual, queries, hidden, n0=None):
    st = state(visual, n0=n0)
    return comp.keep(0, attn, torch.tensor(queries, dtype=torch.bool), st, hidden)


def test_sparsevlm_rank_rule_and_recycling_by_hand():
    # 2 raters with identical rows → rank 1; 6 visual tokens at 0..5, text at 6, 7.
    row = torch.tensor([0.30, 0.05, 0.20, 0.10, 0.15, 0.02, 0.1, 0.08])
    attn = torch.stack([row, row])[None]
    hidden = torch.arange(8 * 2, dtype=torch.float32).reshape(1, 8, 2)
    visual = [[1, 1, 1, 1, 1, 1, 0, 0]]
    # λ = R·n0/raters = 0.5·6/2 = 1.5 → k = ⌊1.5·1⌋ = 1: token 0 stays.
    keep, out = _sparse_keep(SparseVLM(retention_ratio=0.5, layers=(0,), recycle=False), attn, visual, [[1, 1]], hidden)
    assert keep[0].nonzero().flatten().tolist() == [0, 6, 7] and torch.equal(out, hidden)
    # recycling: 5 dropped → ⌊5·0.3⌋+1 = 2 best dropped (2: .20, 4: .15) → ⌊2/10⌋+1 = 1 cluster;
    # equal densities → the centre is the earlier token (2), holding the mean of tokens 2 and 4.
    keep, out = _sparse_keep(SparseVLM(retention_ratio=0.5, layers=(0,)), attn, visual, [[1, 1]], hidden)
    assert keep[0].nonzero().flatten().tolist() == [0, 2, 6, 7]
    assert torch.equal(out[0, 2], (hidden[0, 2] + hidden[0, 4]) / 2)
    assert torch.equal(out[0, [0, 1, 3, 4, 5, 6, 7]], hidden[0, [0, 1, 3, 4, 5, 6, 7]])
    # an explicit λ (the release's scale) and β: ⌊3·1 + 1.5⌋ = 4 (capped at n_v − 1 = 5)
    keep, _ = _sparse_keep(SparseVLM(layers=(0,), scale=3.0, bias=1.5, recycle=False), attn, visual, [[1, 1]], hidden)
    assert keep[0].nonzero().flatten().tolist() == [0, 2, 3, 4, 6, 7]
    keep, _ = _sparse_keep(SparseVLM(layers=(0,), scale=30.0, recycle=False), attn, visual, [[1, 1]], hidden)
    assert int(keep[0, :6].sum()) == 5  # never more than n_v − 1, as the release


def test_sparsevlm_full_column_rank_or_no_raters_or_r1_keeps_everything():
    attn = torch.tensor([[[0.6, 0.1, 0.3], [0.1, 0.7, 0.2]]])  # 2 raters × 2 visual: rank 2 = n_v
    hidden = torch.randn(1, 3, 4)
    keep, out = _sparse_keep(SparseVLM(retention_ratio=0.1, layers=(0,)), attn, [[1, 1, 0]], [[1, 1]], hidden)
    assert keep.all() and torch.equal(out, hidden)
    keep, _ = _sparse_keep(SparseVLM(retention_ratio=0.1, layers=(0,)), attn, [[1, 1, 0]], [[0, 0]], hidden)
    assert keep.all()
    same = torch.tensor([[[0.5, 0.1, 0.4], [0.5, 0.1, 0.4]]])
    keep, _ = _sparse_keep(SparseVLM(retention_ratio=1.0, layers=(0,)), same, [[1, 1, 0]], [[1, 1]], hidden)
    assert keep.all()


def test_sparsevlm_rank_ignores_padding_rows_and_the_batch():
    """A row's rank (and so its count) is the same alone and in a batch with a wider row."""
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(1, 3, 12), -1)
    b = torch.softmax(torch.randn(1, 5, 12), -1)
    comp = SparseVLM(retention_ratio=0.3, layers=(0,), recycle=False)
    vis_a = [[1] * 9 + [0] * 3]
    vis_b = [[1] * 10 + [0] * 2]
    keep_a, _ = _sparse_keep(comp, a, vis_a, [[1, 1, 1]], torch.zeros(1, 12, 2))
    keep_b, _ = _sparse_keep(comp, b, vis_b, [[1] * 5], torch.zeros(1, 12, 2))
    batch = torch.cat([torch.cat([a, torch.zeros(1, 2, 12)], 1), b])
    keep, _ = _sparse_keep(comp, batch, vis_a + vis_b, [[1, 1, 1, 0, 0], [1] * 5], torch.zeros(2, 12, 2))
    assert torch.equal(keep[0], keep_a[0]) and torch.equal(keep[1], keep_b[0])


def dpc_oracle(x: torch.Tensor, c: int) -> tuple[list[int], list[int]]:
    """DPC-kNN written with loops over tokens (float64), as SparseVLM's release computes it —
    its 1e-6 random density noise replaced by: of two equal densities the lower index is denser."""
    n, dim = x.shape
    d = [[float(torch.dist(x[i].double(), x[j].double())) / math.sqrt(dim) for j in range(n)] for i in range(n)]
    dens = [math.exp(-sum(v * v for v in sorted(d[i])[:c]) / c) for i in range(n)]
    dmax = max(max(r) for r in d)
    denser = [[dens[j] > dens[i] or (dens[j] == dens[i] and j < i) for j in range(n)] for i in range(n)]
    parent = [min([d[i][j] for j in range(n) if denser[i][j]] or [dmax]) for i in range(n)]
    score = [parent[i] * dens[i] for i in range(n)]
    centres = sorted(sorted(range(n), key=lambda i: (-score[i], i))[:c])
    cluster = [i if i in centres else min(centres, key=lambda k: (d[i][k], k)) for i in range(n)]
    return centres, cluster


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dpc_knn_equals_a_loop_oracle_on_a_padded_batch(seed):
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, 6, generator=gen) for n in (9, 14)]
    cs = [2, 3]
    x = torch.zeros(2, 14, 6)
    valid = torch.zeros(2, 14, dtype=torch.bool)
    for b, xb in enumerate(xs):
        x[b, : len(xb)], valid[b, : len(xb)] = xb, True
    cluster, centre = dpc_knn_clusters(x, valid, torch.tensor(cs))
    for b, (xb, c) in enumerate(zip(xs, cs)):
        want_centres, want_cluster = dpc_oracle(xb, c)
        assert centre[b].nonzero().flatten().tolist() == want_centres
        assert cluster[b, : len(xb)].tolist() == want_cluster
        assert (cluster[b, len(xb):] == -1).all()


def test_dpc_finds_two_blobs_and_merge_takes_their_means():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(4, 3, generator=gen) * 0.05
    b = torch.randn(4, 3, generator=gen) * 0.05 + 5.0
    x = torch.cat([a, b])[None]
    cluster, centre = dpc_knn_clusters(x, torch.ones(1, 8, dtype=torch.bool), torch.tensor([2]))
    assert int(centre.sum()) == 2 and set(cluster[0, :4].tolist()) | set(cluster[0, 4:].tolist()) == set(
        centre[0].nonzero().flatten().tolist())
    assert len(set(cluster[0, :4].tolist())) == 1 and len(set(cluster[0, 4:].tolist())) == 1
    merged = merge_clusters(x, cluster)
    ca, cb = int(cluster[0, 0]), int(cluster[0, 4])
    assert torch.allclose(merged[0, ca], a.mean(0)) and torch.allclose(merged[0, cb], b.mean(0))


# ----------------------------------------------------------------------------- pipelines and flags


def test_pipeline_splits_the_budget_in_the_log():
    p = build_compressor("globalcom2+fastv", retention_ratio=0.1, k=3, temperature=5.0)
    assert isinstance(p, Pipeline) and p.name == "globalcom2+fastv" and llm_stage(p) is p.llm
    assert p.vision.retention_ratio == pytest.approx(math.sqrt(0.1)) and p.vision.temperature == 5.0
    assert p.llm.retention_ratio == pytest.approx(math.sqrt(0.1)) and p.llm.k == 3
    q = build_compressor("globalcom2+sparsevlm", retention_ratio=0.1, vision_ratio=0.25, layers="1,2")
    assert (q.vision.retention_ratio, q.llm.retention_ratio, q.llm.layers) == (0.25, pytest.approx(0.4), (1, 2))
    r = build_compressor("fastervlm+pdrop", retention_ratio=0.2, ratios="0.5,0.2,0.1")
    assert r.vision.retention_ratio == 0.2 and r.llm.ratios == (0.5, 0.2, 0.1)
    assert build_compressor("none+fastv", retention_ratio=0.3).llm.retention_ratio == 0.3
    assert p.to_dict()["vision"]["name"] == "globalcom2" and p.to_dict()["llm"]["k"] == 3
    assert "vision_ratio" in option_names("globalcom2+fastv") and "vision_ratio" not in option_names("globalcom2+pdrop")


def test_pipeline_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="in-LLM method"):
        build_compressor("fastv+globalcom2")
    with pytest.raises(ValueError, match="unknown pipeline"):
        build_compressor("globalcom2+fastv+pdrop")
    with pytest.raises(TypeError, match="does not take option.*vision_ratio"):
        build_compressor("globalcom2+pdrop", vision_ratio=0.5)
    with pytest.raises(ValueError, match="below the overall"):
        build_compressor("globalcom2+fastv", retention_ratio=0.3, vision_ratio=0.2)
    with pytest.raises(TypeError, match="does not take option.*bogus"):
        build_compressor("globalcom2+fastv", bogus=1)


def _parse(argv):
    ap = add_compression_args(argparse.ArgumentParser())
    return compressor_from_args(ap.parse_args(argv))


def test_shared_flags_reach_the_in_llm_methods_and_are_refused_by_name():
    c = _parse(["--compression", "globalcom2+fastv", "--retention-ratio", "0.1", "--fastv-k", "3", "--crop-order",
                "reverse"])
    assert c.llm.k == 3 and c.crop_order == "reverse" and c.vision.crop_order == "reverse"
    s = _parse(["--compression", "sparsevlm", "--prune-layers", "1,3", "--sparsevlm-scale", "9",
                "--sparsevlm-bias", "6", "--sparsevlm-recycle", "false"])
    assert (s.layers, s.scale, s.bias, s.recycle) == ((1, 3), 9.0, 6.0, False)
    assert _parse(["--compression", "pdrop", "--pdrop-ratios", "0.5,0.2,0.1"]).ratios == (0.5, 0.2, 0.1)
    with pytest.raises(SystemExit, match="does not take --tau"):
        _parse(["--compression", "fastv", "--tau", "5"])
    with pytest.raises(SystemExit, match="does not take --fastv-k"):
        _parse(["--compression", "globalcom2", "--fastv-k", "2"])
    with pytest.raises(SystemExit):
        _parse(["--compression", "globalcom2+bogus"])


def test_reverse_crop_order_packs_the_same_tokens_with_the_crops_mirrored():
    # 2×2 crops of 2×2 tokens, no letterbox: forward rows r0..r3 = crops (0,1),(0,1),(2,3),(2,3).
    lay = AnyResLayout(2, 2, 2, 0, 4, 0, 4)
    thumb, crops = Fn.keep_all(lay)
    fwd = Fn.pack_plan(lay, thumb, crops)
    rev = Fn.pack_plan(lay, thumb, crops, crop_order="reverse")
    nl = 5 * 4

    def crop_rows(index):  # (crop, token) per canvas row, newline-separated
        rows, row = [], []
        for i in index[4:].tolist():
            if i == nl:
                rows.append(row)
                row = []
            else:
                row.append(divmod(i - 4, 4))
        return rows

    assert crop_rows(fwd.index) == [[(0, 0), (0, 1), (1, 0), (1, 1)], [(0, 2), (0, 3), (1, 2), (1, 3)],
                                    [(2, 0), (2, 1), (3, 0), (3, 1)], [(2, 2), (2, 3), (3, 2), (3, 3)]]
    assert crop_rows(rev.index) == [[(3, 0), (3, 1), (2, 0), (2, 1)], [(3, 2), (3, 3), (2, 2), (2, 3)],
                                    [(1, 0), (1, 1), (0, 0), (0, 1)], [(1, 2), (1, 3), (0, 2), (0, 3)]]
    assert rev.kept is None and torch.equal(fwd.index.sort().values, rev.index.sort().values)
    # with a letterbox (rows 1..3 visible) each crop keeps its own visible rows
    box = AnyResLayout(2, 2, 2, 1, 3, 0, 4)
    t2, c2 = Fn.keep_all(box)
    rows = crop_rows(Fn.pack_plan(box, t2, c2, crop_order="reverse").index)
    assert rows == [[(3, 0), (3, 1), (2, 0), (2, 1)], [(1, 2), (1, 3), (0, 2), (0, 3)]]
