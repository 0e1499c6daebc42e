"""Video compression as pure functions: GlobalCom²'s frame budgets from the global video
representation (against a loop re-derivation of the rule as stated, and hand-worked cases),
VidCom2 and EVS against loop re-derivations of their released rules, counts, order, exact
budgets, keep-all, and images left whole by the video-only methods."""

from __future__ import annotations

import math

import pytest
import torch

from llava.compression import COMPRESSORS, AnyResLayout, VideoLayout, build_compressor, option_names
from llava.compression.scoring import neg_cos_scores

VIDEO_METHODS = [name for name, cls in COMPRESSORS.items() if cls.handles_video()]


def at_ratio(name, R):
    """``name`` at retention ratio R when it takes one (``none`` and PDrop do not)."""
    return build_compressor(name, **({"retention_ratio": R} if "retention_ratio" in option_names(name) else {}))

D = 8


def video(F, rows=3, cols=4, seed=0, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(F, rows * cols, D, generator=g) + spread * torch.randn(F, 1, D, generator=g)
    return x, VideoLayout(F, rows, cols)


# ----------------------------------------------------------------------------- loop references


def _cos(a, b):
    na = math.sqrt(sum(v * v for v in a))
    nb = math.sqrt(sum(v * v for v in b))
    return sum(u * v for u, v in zip(a, b)) / max(na * nb, 1e-8)


def reference_globalcom2(x, R, tau=10.0, alpha=0.5, allocation="softmax_sum"):
    """GlobalCom² for video, as the issue states it, in plain Python: budgets r_f and the kept
    token indices of every frame."""
    rows = x.tolist()
    F, N = len(rows), len(rows[0])
    all_tokens = [t for fr in rows for t in fr]
    g = [sum(t[d] for t in all_tokens) / len(all_tokens) for d in range(D)]
    s = [[-_cos(t, g) for t in fr] for fr in rows]
    if allocation == "uniform":
        r = [R] * F
    elif allocation == "ntopk":
        flat = sorted(((s[f][i], -(f * N + i)) for f in range(F) for i in range(N)), reverse=True)
        top = {-j for _, j in flat[: math.floor(R * F * N)]}
        c = [sum(1 for i in range(N) if f * N + i in top) for f in range(F)]
        r = [min(1.0, R * F * cf / max(sum(c), 1)) for cf in c]
    else:
        sf = [sum(fs) if allocation == "softmax_sum" else max(fs) for fs in s]
        e = [math.exp((v - max(sf)) / tau) for v in sf]
        sigma = [v / sum(e) for v in e]
        r = [min(1.0, R * (1 + sg - 1 / F)) for sg in sigma]
    kept = []
    for f in range(F):
        mean_f = [sum(t[d] for t in rows[f]) / N for d in range(D)]
        loc = [-_cos(t, mean_f) for t in rows[f]]
        gn, ln = math.sqrt(sum(v * v for v in s[f])), math.sqrt(sum(v * v for v in loc))
        comb = [alpha * a / gn + (1 - alpha) * b / ln for a, b in zip(s[f], loc)]
        k = math.floor(N * r[f])
        kept.append(sorted(sorted(range(N), key=lambda i: -comb[i])[:k]))
    return r, kept


def reference_vidcom2(x, R, tau=0.01):
    """VidCom2's released rule in plain Python (per-token loops)."""
    F, N, _ = x.shape
    flat = x.reshape(F * N, D).tolist()
    mean = [sum(t[d] for t in flat) / len(flat) for d in range(D)]
    var = [sum((t[d] - mean[d]) ** 2 for t in flat) / len(flat) for d in range(D)]
    channels = sorted(range(D), key=lambda d: var[d])[: D // 2]
    z = []
    for t in flat:
        v = [t[d] for d in channels]
        n = max(math.sqrt(sum(a * a for a in v)), 1e-12)
        z.append([a / n for a in v])
    vc = [sum(t[j] for t in z) / len(z) for j in range(len(channels))]

    def kern(t, c):
        d2 = sum((a - b) ** 2 for a, b in zip(t, c))
        return sum(math.exp(-d2 / (2 * a)) for a in (0.125, 0.25, 0.5, 1.0, 2.0))

    r, kept = [], []
    sims = []
    for f in range(F):
        frame = z[f * N : (f + 1) * N]
        fc = [sum(t[j] for t in frame) / N for j in range(len(channels))]
        sims.append(([kern(t, vc) for t in frame], [kern(t, fc) for t in frame]))
    s = [-sum(v) / N for v, _ in sims]
    e = [math.exp((v - max(s)) / tau) for v in s]
    p = [v / sum(e) for v in e]
    for f in range(F):
        rf = min(1.0, R * (1 + p[f] - sum(p) / F))
        k = max(1, round(rf * N))
        total = [a + b for a, b in zip(*sims[f])]
        kept.append(sorted(sorted(range(N), key=lambda i: total[i])[:k]))
        r.append(rf)
    return r, kept


def kept_per_frame(record):
    lay = record.layout
    idx = record.kept[record.kept < lay.frame_tokens].tolist()
    return [[i % lay.tokens_per_frame for i in idx if i // lay.tokens_per_frame == f] for f in range(lay.frames)]


# ----------------------------------------------------------------------------- GlobalCom²


@pytest.mark.parametrize("allocation", ["softmax_sum", "softmax_max", "ntopk", "uniform"])
@pytest.mark.parametrize("alpha", [0.5, 0.0, 1.0])
def test_globalcom2_video_equals_the_stated_rule(allocation, alpha):
    for seed, (F, R, tau) in enumerate([(5, 0.25, 10.0), (3, 0.5, 1.0), (8, 0.1, 0.5)]):
        x, lay = video(F, seed=seed)
        comp = build_compressor("globalcom2", retention_ratio=R, temperature=tau, alpha=alpha, allocation=allocation)
        rec = comp.compress(x, None, lay, neg_cos_scores(x))
        r, kept = reference_globalcom2(x, R, tau, alpha, allocation)
        assert rec.selection.budgets.tolist() == pytest.approx(r, abs=1e-7)
        assert kept_per_frame(rec) == kept
        assert rec.info()["frame_kept"] == [len(k) for k in kept]


def test_defaults_are_the_image_methods():
    comp = build_compressor("globalcom2")
    assert (comp.retention_ratio, comp.temperature, comp.alpha, comp.allocation, comp.budget) == (
        0.25, 10.0, 0.5, "softmax_sum", "adaptive")
    assert build_compressor("vidcom2").temperature == 0.01 and build_compressor("vidcom2").retention_ratio == 0.25
    assert build_compressor("evs").retention_ratio == 0.25


def test_one_distinct_frame_among_identical_ones_gets_the_largest_budget():
    """Five identical frames and one unlike them: the distinct frame lies far from the global
    mean, so its token scores −cos(x, g) and its budget are the largest; the identical frames
    share one budget and keep the same cells."""
    g = torch.Generator().manual_seed(3)
    same = torch.randn(1, 16, D, generator=g) + 3.0
    frames = same.repeat(6, 1, 1)
    frames[4] = -frames[4] + 0.3 * torch.randn(16, D, generator=g)
    lay = VideoLayout(6, 4, 4, newline=True)
    comp = build_compressor("globalcom2", retention_ratio=0.25, temperature=1.0)
    rec = comp.compress(frames, torch.zeros(D), lay, neg_cos_scores(frames))
    r = rec.selection.budgets
    assert int(r.argmax()) == 4 and r[4] > r[0]
    others = r[[0, 1, 2, 3, 5]]
    assert torch.allclose(others, others[0].expand(5))
    # hand-worked: σ of five equal frames = (1 − σ_4)/5, so r_f = R·(1 + σ_f − 1/6)
    sigma4 = float(r[4]) / 0.25 - 1 + 1 / 6
    assert float(r[0]) == pytest.approx(0.25 * (1 + (1 - sigma4) / 5 - 1 / 6), abs=1e-7)
    counts = rec.info()["frame_kept"]
    assert counts == [math.floor(16 * float(b)) for b in r]
    kept = kept_per_frame(rec)
    assert kept[0] == kept[1] == kept[2] == kept[3] == kept[5]


def test_video_packing_frame_then_raster_order_and_the_newline():
    x, _ = video(4, rows=4, cols=4, seed=1)
    lay = VideoLayout(4, 4, 4, newline=True)
    newline = torch.full((D,), 7.0)
    for name in VIDEO_METHODS:
        comp = at_ratio(name, 0.3)
        rec = comp.compress(x, newline, lay, neg_cos_scores(x))
        T = rec.index.shape[0]
        assert torch.equal(rec.kept, rec.index)  # a subsequence of the host's run
        assert bool((rec.kept.diff() > 0).all()) and int(rec.kept[-1]) == lay.frame_tokens  # newline last
        assert torch.equal(rec.tokens[:-1], x.reshape(-1, D)[rec.kept[:-1]]) and torch.equal(rec.tokens[-1], newline)
        assert T == sum(rec.info()["frame_kept"]) + 1
        again = comp.compress(x, newline, lay, neg_cos_scores(x))
        assert torch.equal(again.tokens, rec.tokens)  # deterministic


@pytest.mark.parametrize("name", ["globalcom2", "fastervlm", "uniform_random", "vidcom2"])
@pytest.mark.parametrize("R", [0.05, 0.25, 0.33, 0.7, 1.0])
def test_exact_budget_keeps_floor_R_F_N(name, R):
    for F, newline in [(3, False), (7, True)]:
        x, _ = video(F, seed=F)
        lay = VideoLayout(F, 3, 4, newline=newline)
        comp = build_compressor(name, retention_ratio=R, budget="exact")
        rec = comp.compress(x, torch.zeros(D) if newline else None, lay, neg_cos_scores(x))
        expect = math.floor(R * F * 12) + int(newline)
        assert rec.index.shape[0] == expect == comp.token_count(lay)


def test_adaptive_counts_known_from_the_shape_only_when_fixed():
    lay = VideoLayout(5, 3, 4, newline=True)
    assert build_compressor("globalcom2").token_count(lay) is None
    assert build_compressor("vidcom2").token_count(lay) is None
    assert build_compressor("globalcom2", allocation="uniform").token_count(lay) == 5 * 3 + 1
    assert build_compressor("fastervlm").token_count(lay) == 5 * 3 + 1
    assert build_compressor("evs", retention_ratio=0.1).token_count(lay) == 12 + 1  # max(N, ⌊F·N·R⌋)
    assert build_compressor("none").token_count(lay) == 61


def test_fastervlm_keeps_every_frames_top_R_by_its_score():
    x, lay = video(4, seed=2)
    scores = torch.randn(4, 12, generator=torch.Generator().manual_seed(9))
    rec = build_compressor("fastervlm", retention_ratio=0.25).compress(x, None, lay, scores)
    assert kept_per_frame(rec) == [sorted(scores[f].topk(3).indices.tolist()) for f in range(4)]
    assert rec.selection.budgets is None


def test_keep_all():
    x, lay = video(3, seed=4)
    for comp in (build_compressor("none"), build_compressor("globalcom2", retention_ratio=1.0, allocation="uniform"),
                 build_compressor("fastervlm", retention_ratio=1.0), build_compressor("evs", retention_ratio=1.0)):
        rec = comp.compress(x, None, lay, neg_cos_scores(x))
        assert torch.equal(rec.kept, torch.arange(36)) and torch.equal(rec.tokens, x.reshape(-1, D))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtype_is_kept(dtype):
    x, lay = video(3, seed=5)
    x = x.to(dtype)
    for name in VIDEO_METHODS:
        comp = at_ratio(name, 0.3)
        assert comp.compress(x, None, lay, neg_cos_scores(x)).tokens.dtype == dtype


def test_image_only_methods_refuse_videos_by_name():
    x, lay = video(3, seed=5)
    image_only = sorted(set(COMPRESSORS) - set(VIDEO_METHODS))
    assert {"visionzip", "hired", "prumerge", "prumerge_plus"} <= set(image_only)
    assert {"none", "globalcom2", "fastervlm", "uniform_random", "vidcom2", "evs", "fastv", "sparsevlm", "pdrop"} <= set(
        VIDEO_METHODS
    )
    for name in image_only:
        with pytest.raises(NotImplementedError, match=f"{name} does not compress videos"):
            build_compressor(name, retention_ratio=0.3).compress(x, None, lay, neg_cos_scores(x))


# ----------------------------------------------------------------------------- VidCom2, EVS


def test_vidcom2_equals_its_released_rule():
    for seed, (F, R) in enumerate([(4, 0.25), (6, 0.1), (2, 0.6), (5, 0.4)]):
        x, lay = video(F, rows=4, cols=4, seed=10 + seed, spread=1.0 + seed)
        rec = build_compressor("vidcom2", retention_ratio=R).compress(x, None, lay, None)
        r, kept = reference_vidcom2(x, R)
        assert rec.selection.budgets.tolist() == pytest.approx(r, abs=1e-6)
        assert kept_per_frame(rec) == kept


def test_evs_keeps_the_first_frame_and_what_changed():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 12, D, generator=g)
    frames = base.repeat(4, 1, 1)
    changed = {(1, 5), (2, 0), (2, 7), (3, 11)}
    for f, i in changed:
        frames[f:, i] = torch.randn(D, generator=g)  # the cell changes at frame f and stays
    lay = VideoLayout(4, 3, 4)
    rec = build_compressor("evs", retention_ratio=(12 + len(changed)) / 48).compress(frames, None, lay, None)
    kept = kept_per_frame(rec)
    assert kept[0] == list(range(12))
    assert {(f, i) for f in range(1, 4) for i in kept[f]} == changed
    # a static video keeps the first frame: never fewer than N tokens, whatever R
    static = base.repeat(4, 1, 1)
    assert kept_per_frame(build_compressor("evs", retention_ratio=0.1).compress(static, None, lay, None)) == [
        list(range(12)), [], [], []]
    rec = build_compressor("evs", retention_ratio=0.5).compress(static, None, lay, None)
    assert kept_per_frame(rec)[0] == list(range(12)) and rec.index.shape[0] == 24


def test_video_only_methods_leave_images_whole():
    lay = AnyResLayout.for_image((1000, 600), [[336, 672], [672, 336], [672, 672]], 336, 24)
    views = torch.randn(lay.n_views, 576, D)
    for name in ("vidcom2", "evs"):
        comp = build_compressor(name, retention_ratio=0.1)
        rec = comp.compress(views, torch.zeros(D), lay, None)
        assert rec.index.shape[0] == lay.num_tokens() == comp.token_count(lay)


def test_record_info_and_errors():
    x, lay = video(3, seed=6)
    info = build_compressor("globalcom2", retention_ratio=0.5).compress(x, None, lay, neg_cos_scores(x)).info()
    assert info["frames"] == 3 and info["frame_shape"] == [3, 4] and len(info["budgets"]) == 3
    assert info["tokens_uncompressed"] == 36 and info["tokens"] == sum(info["frame_kept"])
    with pytest.raises(ValueError, match=r"got frames of shape \(3, 11, 8\)"):
        build_compressor("globalcom2").compress(x[:, :11], None, lay, None)
    with pytest.raises(ValueError, match="needs vision-tower scores"):
        build_compressor("globalcom2").compress(x, None, lay, None)
    with pytest.raises(ValueError, match="ends in a newline token"):
        build_compressor("none").compress(x, None, VideoLayout(3, 3, 4, newline=True), None)
    with pytest.raises(ValueError, match="at least one frame"):
        VideoLayout(0, 3, 4)
