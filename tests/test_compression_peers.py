"""VisionZip, HiRED, PruMerge and PruMerge+: hand-worked cases of their pure functions, each
method against a loop re-derivation of its public code on one CLIP layer, equal-budget counts
on every grid, R = 1 ≡ vanilla, batch ≡ singles and the score plumbing of our tower."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from compression_helpers import random_scores

from llava.compression import AnyResLayout, TowerScores, build_compressor
from llava.compression import functional as Fn
from llava.compression import peer_functional as P
from llava.compression.scoring import cls_attention_scores, patch_keys, tower_scores
from llava.mm_utils import process_images, tokenizer_image_token
from llava.testing.tiny_checkpoint import V16_PINPOINTS

N = 576
SIZES = [(1000, 600), (600, 1000), (672, 672), (336, 336), (1500, 400), (400, 1500), (800, 380), (2500, 50)]
EXACT = [
    dict(name="visionzip"), dict(name="visionzip", merge="mean", contextual_ratio=0.5),
    dict(name="hired"), dict(name="hired", alpha=0.2, regions="spatial"),
    dict(name="prumerge", merge="none"), dict(name="prumerge_plus", merge="mean"),
]


def _build(config, **kw):
    c = dict(config)
    return build_compressor(c.pop("name"), **c, **kw)


# ----------------------------------------------------------------------------- pure functions


def test_apportion_hand_worked():
    caps = torch.tensor([5, 5, 5])
    assert P.apportion(10, torch.tensor([1, 1, 1]), caps, 5).tolist() == [4, 3, 3]  # ties: the lower view
    # view 0 capped at 4, view 1 takes the rest, the weightless view nothing
    assert P.apportion(10, torch.tensor([3, 1, 0]), torch.tensor([4, 10, 10]), 10).tolist() == [4, 6, 0]
    # weightless views share in proportion to their caps; a total above Σ caps gives every cap
    assert P.apportion(5, torch.tensor([0, 0]), torch.tensor([2, 8]), 8).tolist() == [1, 4]
    assert P.apportion(99, torch.tensor([2, 1]), torch.tensor([3, 4]), 4).tolist() == [3, 4]


def test_apportion_is_websters_method():
    """Against the sequential form: the next token goes to the view with the largest w/(s + ½)."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        n = int(torch.randint(1, 7, (1,), generator=gen))
        w = torch.randint(1, 60, (n,), generator=gen)
        caps = torch.randint(0, 40, (n,), generator=gen)
        total = int(torch.randint(0, int(caps.sum()) + 1, (1,), generator=gen))
        seats = [0] * n
        for _ in range(total):
            best = max((j for j in range(n) if seats[j] < caps[j]), key=lambda j: (w[j] / (seats[j] + 0.5), -j))
            seats[best] += 1
        assert P.apportion(total, w, caps, 40).tolist() == seats


def test_iqr_outliers_equal_numpy_percentiles():
    gen = torch.Generator().manual_seed(1)
    s = torch.rand(6, 50, generator=gen) ** 4
    valid = torch.rand(6, 50, generator=gen) > 0.3
    valid[5] = False
    got = P.iqr_outliers(s, valid)
    for v in range(6):
        a = s[v][valid[v]].numpy().astype(np.float64)
        want = torch.zeros(50, dtype=torch.bool)
        if a.size:
            q1, q3 = np.percentile(a, 25), np.percentile(a, 75)
            want[valid[v]] = torch.from_numpy(a > q3 + 1.5 * (q3 - q1))
        assert torch.equal(got[v], want)
    assert not got[5].any()


def test_spaced_and_stride_picks_hand_worked():
    cand = torch.zeros(2, 10, dtype=torch.bool)
    cand[0] = True
    cand[1, [1, 2, 4, 7, 8]] = True
    got = P.spaced_picks(cand, torch.tensor([2, 2]))
    assert got[0].nonzero().flatten().tolist() == [0, 5]  # ranks ⌈i·10/2⌉
    assert got[1].nonzero().flatten().tolist() == [1, 7]  # ranks 0 and ⌈5/2⌉ = 3
    assert P.spaced_picks(cand, torch.tensor([0, 5])).sum(1).tolist() == [0, 5]
    valid = torch.ones(1, 12, dtype=torch.bool)
    valid[0, 8] = False
    assert P.stride_picks(valid, torch.tensor([4]), 11).nonzero()[:, 1].tolist() == [0, 4]  # 8 invalid


def test_region_counts_release_bands_versus_spatial_quadrants():
    lay = AnyResLayout(2, 2, 4, 0, 8, 0, 8)  # 4×4 thumbnail, 2×2 crops
    mask = torch.zeros(16, dtype=torch.bool)
    mask[[0, 1, 2, 3, 5]] = True  # the whole first row + (1, 1)
    assert P.region_counts(mask, lay, "release").tolist() == [4, 1, 0, 0]  # rows 0-0.5 | 1 | 2 | 3 … in bands of 4
    assert P.region_counts(mask, lay, "spatial").tolist() == [3, 2, 0, 0]  # quadrants


def test_contextual_merge_hand_worked():
    x = torch.arange(12, dtype=torch.float32).view(1, 6, 2)
    keys = torch.tensor([[[1.0, 0], [1, 0], [0.9, 0.1], [0, 1], [0.1, 1], [0.2, 0.9]]])
    dominant = torch.zeros(1, 6, dtype=torch.bool)
    dominant[0, 0] = True
    valid = torch.ones(1, 6, dtype=torch.bool)
    # rest = 1..5 (M = 5), 2 targets: step 5 // 2 = 2 → ranks 0, 2 → tokens 1 and 3; 2 joins 1, 4 and 5 join 3
    targets, out = P.contextual_merge(x, keys, dominant, valid, torch.tensor([2]), "release")
    assert targets[0].nonzero().flatten().tolist() == [1, 3]
    torch.testing.assert_close(out[0, 1], x[0, 1] + x[0, 2])
    torch.testing.assert_close(out[0, 3], x[0, 3] + (x[0, 4] + x[0, 5]) / 2)
    torch.testing.assert_close(out[0, [0, 2, 4, 5]], x[0, [0, 2, 4, 5]])
    _, mean = P.contextual_merge(x, keys, dominant, valid, torch.tensor([2]), "mean")
    torch.testing.assert_close(mean[0, 3], (x[0, 3] + x[0, 4] + x[0, 5]) / 3)


def test_neighbour_merge_hand_worked():
    x = torch.tensor([[[1.0, 0], [0, 1], [2, 2], [5, 5]]])
    keys = torch.tensor([[[1.0, 0], [0.9, 0.1], [0.5, 0.5], [0, 1]]])
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    kept = torch.tensor([[True, False, False, False]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    out = P.neighbour_merge(x, keys, kept, valid, w, k=2)  # token 0's two nearest: 1, then 2
    torch.testing.assert_close(out[0, 0], x[0, 0] + 0.2 * x[0, 1] + 0.3 * x[0, 2])
    torch.testing.assert_close(out[0, 1:], x[0, 1:])
    mean = P.neighbour_merge(x, keys, kept, valid, w, k=2, average="mean")
    torch.testing.assert_close(mean[0, 0], (0.1 * x[0, 0] + 0.2 * x[0, 1] + 0.3 * x[0, 2]) / 0.6)
    valid[0, 1] = False  # an invalid token is never a neighbour
    out = P.neighbour_merge(x, keys, kept, valid, w, k=2)
    torch.testing.assert_close(out[0, 0], x[0, 0] + 0.3 * x[0, 2] + 0.4 * x[0, 3])


# ----------------------------------------------------------------------------- scores


def _clip_layer(seed: int, width: int = 32, heads: int = 4):
    from transformers import CLIPVisionConfig
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=width, intermediate_size=64, num_attention_heads=heads, num_hidden_layers=1)
    layer = CLIPEncoderLayer(cfg).eval()
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return layer


def _qk(layer, h):
    """Full-width q and k of ``layer`` for hidden ``h`` ``[1+N, C]`` (as the peers' hooks see them)."""
    y = layer.layer_norm1(h)
    return layer.self_attn.q_proj(y), layer.self_attn.k_proj(y)


def _head_attention(layer, h):
    """``[H, T, T]`` post-softmax attention of every head — the test-only full map."""
    q, k = _qk(layer, h)
    H = layer.self_attn.num_heads
    q, k = q.view(-1, H, q.shape[-1] // H).transpose(0, 1), k.view(-1, H, k.shape[-1] // H).transpose(0, 1)
    return (q @ k.transpose(1, 2) * layer.self_attn.scale).softmax(-1), k


def test_onehead_scores_and_keys():
    layer = _clip_layer(0)
    h = torch.randn(2, 1 + 36, 32)
    with torch.no_grad():
        q, k = _qk(layer, h)
        want = (q @ k.transpose(1, 2) * 32 ** -0.5).softmax(-1)[:, 0, 1:]  # PruMerge: one head, scale C^-1/2
        torch.testing.assert_close(cls_attention_scores(layer, h, "cls_softmax_onehead"), want)
        torch.testing.assert_close(patch_keys(layer, h, "concat"), k[:, 1:])
        torch.testing.assert_close(patch_keys(layer, h, "head_mean"), k[:, 1:].view(2, 36, 4, 8).mean(2))


# ----------------------------------------------------------------------------- methods vs their code


def _single(side: int) -> AnyResLayout:
    return AnyResLayout.single_view(side)


def _packed(comp, x, lay, sig) -> dict[int, torch.Tensor]:
    out = comp.compress(x[None], torch.zeros(x.shape[-1]), lay, sig)
    n = lay.tokens_per_view
    return {int(i): t for i, t in zip(out.index, out.tokens) if i < n}


def test_visionzip_equals_its_code_on_one_view():
    layer, h, x = _clip_layer(1), torch.randn(1, 37, 32), torch.randn(36, 5)
    comp = build_compressor("visionzip", retention_ratio=0.5)  # 18 tokens: ⌊18·10/64⌉ = 3 contextual, 15 dominant
    with torch.no_grad():
        got = _packed(comp, x, _single(6), tower_scores([layer, layer], lambda i: h, comp.score_request()))
        att, kh = _head_attention(layer, h[0])
        cls = att[:, 0, 1:].sum(0)  # VisionZip sums the heads' [CLS] rows
        metric = F.normalize(kh.mean(0)[1:], dim=-1)  # head-mean keys of the same layer
    dominant = cls.topk(15).indices.tolist()
    rest = [i for i in range(36) if i not in dominant]
    step = max(1, len(rest) // 3)
    targets = [rest[r] for r in range(0, len(rest), step)][:3]
    groups = {t: [] for t in targets}
    for i in rest:
        if i not in targets:
            groups[max(targets, key=lambda t: float(metric[i] @ metric[t]))].append(i)
    want = {i: x[i] for i in dominant}
    want.update({t: x[t] + (x[g].mean(0) if g else 0) for t, g in groups.items()})
    assert sorted(got) == sorted(want)
    for i in want:
        torch.testing.assert_close(got[i], want[i])


@pytest.mark.parametrize("plus", [False, True])
def test_prumerge_adaptive_equals_its_code_on_one_view(plus):
    layer, h, x = _clip_layer(2), torch.randn(1, 37, 32), torch.randn(36, 5)
    h[0, 5] *= 6  # a few tokens that stand out
    comp = build_compressor("prumerge_plus" if plus else "prumerge", budget="adaptive", neighbours=8)
    with torch.no_grad():
        got = _packed(comp, x, _single(6), tower_scores([layer], lambda i: h, comp.score_request()))
        q, k = _qk(layer, h[0])
        attn = (q @ k.T * 32 ** -0.5).softmax(-1)[0, 1:]
        keys = F.normalize(k[1:], dim=-1)
    a = attn.numpy()
    q1, q3 = np.percentile(a, 25), np.percentile(a, 75)
    n_out = int((a > q3 + 1.5 * (q3 - q1)).sum())
    assert n_out > 0
    idx = attn.topk(n_out).indices.tolist()
    if plus:
        s = max(1, (36 // n_out) // 3)
        idx += [p for p in range(0, 35, s) if p not in idx]
    want = {}
    for i in idx:
        sims = keys[i] @ keys.T
        sims[i] = -float("inf")
        near = sims.topk(8).indices
        want[i] = x[i] + (attn[near, None] * x[near]).sum(0)
    assert sorted(got) == sorted(want)
    for i in want:
        torch.testing.assert_close(got[i], want[i])


def test_hired_equals_its_code_on_a_2x2_grid():
    """R = 0.25, 6×6 views, no padding: T = 9 + 36 = 45 = int(5·36·0.25) as HiRED counts."""
    early, final = _clip_layer(3), _clip_layer(4)
    lay = AnyResLayout(2, 2, 6, 0, 12, 0, 12)
    h0, h1 = torch.randn(5, 37, 32), torch.randn(5, 37, 32)
    x = torch.randn(5, 36, 4)
    comp = build_compressor("hired", retention_ratio=0.25)
    hidden = {0: h0, 1: h1}
    with torch.no_grad():
        sig = tower_scores([early, final, early], hidden.__getitem__, comp.score_request())
        out = comp.compress(x, torch.zeros(4), lay, sig)
        top = torch.stack([_head_attention(final, h1[v])[0][:, 0, 1:].sum(0) for v in range(5)])
        guide = _head_attention(early, h0[0])[0][:, 0, 1:].sum(0)
    thumb, crops = 22, 23  # min(int(45·0.5), 36), 45 − 22
    assert out.selection.thumb_keep.sum() == thumb
    assert torch.equal(out.selection.thumb_keep.nonzero().flatten().sort().values, top[0].topk(thumb).indices.sort().values)
    spatial = torch.zeros(36, dtype=torch.bool)
    spatial[guide.topk(18).indices] = True  # int(36·(1 − 0.5))
    share = spatial.reshape(2, 2, -1).sum(-1).reshape(-1).double()  # HiRED's reshape: crop j ← chunk j
    k = out.selection.crop_keep.sum(1)
    assert int(k.sum()) == crops
    assert ((k - share / share.sum() * crops).abs() < 1).all()  # HiRED floors; we hand out the remainder too
    for j in range(4):
        assert torch.equal(out.selection.crop_keep[j].nonzero().flatten(), top[1 + j].topk(int(k[j])).indices.sort().values)


# ----------------------------------------------------------------------------- counts and invariants


@pytest.mark.parametrize("config", EXACT, ids=lambda c: "-".join(map(str, c.values())))
def test_every_grid_keeps_exactly_the_equal_budget(config):
    for size in SIZES:
        lay = AnyResLayout.for_image(size, V16_PINPOINTS)
        valid = torch.cat([torch.ones(1, N, dtype=torch.bool), Fn.crop_valid_mask(lay)])
        for R, newlines in [(0.05, "kept"), (0.1, "all"), (0.1, "none"), (0.3, "kept"), (1.0, "kept")]:
            comp = _build(config, retention_ratio=R, newlines=newlines)
            x = torch.randn(lay.n_views, N, 4)
            out = comp.compress(x, torch.zeros(4), lay, random_scores(comp, lay.n_views, N, seed=int(R * 100)))
            sel = out.selection
            kept = torch.cat([sel.thumb_keep[None], sel.crop_keep])
            assert not (kept & ~valid).any()
            total = Fn.floor_count(N, R) + Fn.floor_count(lay.canvas_tokens, R)
            assert int(kept.sum()) == total, (config, size, R)
            n_nl = int((out.index == lay.n_views * N).sum())
            assert out.index.shape[0] == total + n_nl
            if newlines != "kept":
                assert out.index.shape[0] == comp.token_count(lay)
                assert n_nl == (lay.visible_shape[0] if newlines == "all" else 0)
            if config["name"] == "visionzip":  # every view R of its tokens
                assert int(kept[0].sum()) == Fn.floor_count(N, R)
                quota = valid[1:].sum(1) * (Fn.floor_count(lay.canvas_tokens, R) / max(lay.canvas_tokens, 1))
                assert ((kept[1:].sum(1) - quota).abs() < 1).all()
            if config["name"] == "hired":
                assert (int(kept[0].sum()), int(kept[1:].sum())) == comp.split(lay)
            if R == 1.0 and not config["name"].startswith("prumerge"):  # the PruMerges merge at R = 1 too
                torch.testing.assert_close(out.tokens, build_compressor("none").compress(x, torch.zeros(4), lay).tokens)


def test_prumerge_exact_shares_follow_the_outlier_counts():
    lay = AnyResLayout.for_image((672, 672), V16_PINPOINTS)
    s = torch.rand(5, N) * 0.01
    outliers = [40, 10, 0, 5, 25]
    for v, o in enumerate(outliers):
        s[v, :o] += 1.0
    sig = TowerScores(s, torch.randn(5, N, 8))
    out = build_compressor("prumerge", retention_ratio=0.1, merge="none").compress(torch.randn(5, N, 4), torch.zeros(4), lay, sig)
    kept = torch.cat([out.selection.thumb_keep[None], out.selection.crop_keep]).sum(1)
    assert kept.tolist() == P.apportion(57 + 230, torch.tensor(outliers), torch.full((5,), N), N).tolist()
    assert kept.tolist() == [143, 36, 0, 18, 90]  # 287 tokens ∝ 40 : 10 : 0 : 5 : 25
    adaptive = build_compressor("prumerge", budget="adaptive", merge="none").compress(torch.randn(5, N, 4), torch.zeros(4), lay, sig)
    assert torch.cat([adaptive.selection.thumb_keep[None], adaptive.selection.crop_keep]).sum(1).tolist() == outliers


def test_options_are_validated_and_peers_need_tower_scores():
    with pytest.raises(ValueError, match="merge must be one of release, mean, none"):
        build_compressor("visionzip", merge="avg")
    with pytest.raises(ValueError, match="contextual_ratio must be in"):
        build_compressor("visionzip", contextual_ratio=1.5)
    with pytest.raises(ValueError, match="regions must be one of release, spatial"):
        build_compressor("hired", regions="quadrants")
    with pytest.raises(ValueError, match="neighbours must be an integer"):
        build_compressor("prumerge", neighbours=0)
    with pytest.raises(ValueError, match="layout='faithful' only"):
        build_compressor("hired", layout="reference")
    with pytest.raises(TypeError, match="does not take option"):
        build_compressor("prumerge", spatial_share=0.5)
    with pytest.raises(ValueError, match="needs the vision tower's"):
        build_compressor("visionzip").compress(torch.randn(1, N, 4), torch.zeros(4), _single(24), torch.rand(1, N))


def test_cli_builds_the_peers():
    import argparse

    from llava.compression.cli import add_compression_args, compressor_from_args

    p = add_compression_args(argparse.ArgumentParser())
    args = ["--compression", "prumerge_plus", "--retention-ratio", "0.1", "--budget", "adaptive", "--merge", "mean",
            "--neighbours", "16", "--spatial-share", "0.5", "--newlines", "none"]
    assert compressor_from_args(p.parse_args(args)) == build_compressor(
        "prumerge_plus", retention_ratio=0.1, budget="adaptive", merge="mean", neighbours=16, spatial_share=0.5,
        newlines="none")
    assert compressor_from_args(p.parse_args(["--compression", "hired", "--alpha", "0.3", "--early-layer", "1",
                                              "--regions", "spatial"])).alpha == 0.3
    with pytest.raises(SystemExit, match="does not take --merge"):
        compressor_from_args(p.parse_args(["--compression", "hired", "--merge", "mean"]))


# ----------------------------------------------------------------------------- through the model


def _encoded(tiny, sizes, seed=3):
    """Pixels, image sizes and layouts of random images of ``sizes`` for the tiny model."""
    _, model, proc, _ = tiny
    from PIL import Image

    rng = np.random.default_rng(seed)
    imgs = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    pixels = process_images(imgs, proc, model.config)
    return pixels, [im.size for im in imgs], [model.image_layout(im.size, px.shape[0]) for im, px in zip(imgs, pixels)]


def test_full_retention_is_vanilla_where_the_rule_allows(tiny, model):
    pixels, sizes, layouts = _encoded(tiny, [(1000, 600), (400, 1500)])
    comps = [
        build_compressor("visionzip", retention_ratio=1.0),
        build_compressor("visionzip", retention_ratio=1.0, merge="mean"),
        build_compressor("hired", retention_ratio=1.0, regions="spatial"),
        build_compressor("prumerge", retention_ratio=1.0, merge="none"),
        build_compressor("prumerge_plus", retention_ratio=1.0, merge="none"),
    ]
    merging = build_compressor("prumerge", retention_ratio=1.0)
    with torch.no_grad():
        for px, lay in zip(pixels, layouts):
            base = model.pack_image(model.encode_views(px)[0], lay, None, None).tokens
            encoded = {}
            for comp in comps + [merging]:
                req = comp.score_request()
                if req not in encoded:
                    encoded[req] = model.encode_views(px, req)
                feats, scores = encoded[req]
                out = model.pack_image(feats, lay, scores, comp).tokens
                if comp is merging:  # PruMerge merges every kept token with its neighbours
                    assert out.shape == base.shape and not torch.equal(out, base)
                else:
                    assert torch.equal(out, base), comp
    tok = tiny[0]  # and one end-to-end forward
    ids = tokenizer_image_token("USER: <image>\nWhat is it? ASSISTANT:", tok, return_tensors="pt")[None]
    with torch.no_grad():
        full = model(input_ids=ids, images=pixels[:1], image_sizes=sizes[:1], compressor=None).logits
        zipped = model(input_ids=ids, images=pixels[:1], image_sizes=sizes[:1], compressor=comps[0]).logits
    assert torch.equal(zipped, full)


@pytest.mark.parametrize("config", [dict(name="visionzip"), dict(name="hired"),
                                    dict(name="prumerge_plus", budget="adaptive")], ids=lambda c: c["name"])
def test_batch_of_images_equals_single_images(tiny, model, config):
    pixels, sizes, _ = _encoded(tiny, [(1000, 600), (336, 336)], seed=5)
    comp = _build(config, retention_ratio=0.2)
    with torch.no_grad():
        together = model.images_to_tokens(pixels, sizes, compressor=comp)
        alone = [model.images_to_tokens([px], [size], compressor=comp)[0] for px, size in zip(pixels, sizes)]
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_tower_scores_equal_transformers_hidden_states(tiny, model):
    """Our tower's multi-layer tap hands each requested layer's input; the bundle equals the one
    computed from transformers' own hidden states."""
    tower = model.get_vision_tower()
    clip = tower.vision_tower
    images = torch.randn(2, 3, 336, 336)
    layers = clip.encoder.layers
    with torch.no_grad():
        hs = clip(pixel_values=images, output_hidden_states=True).hidden_states
        feats, taken = tower(images, tap=((0, -1), lambda i, h: h))
        assert sorted(taken) == [0, 2] and torch.equal(taken[0], hs[0]) and torch.equal(taken[2], hs[2])
        _, listed = tower(list(images), tap=((0, -1), lambda i, h: (h, None)))  # one image at a time
        assert all(torch.allclose(listed[i][0], hs[i], atol=1e-5) and listed[i][1] is None for i in (0, 2))
        for name in ("visionzip", "hired", "prumerge"):
            req = build_compressor(name).score_request()
            _, ours = model.encode_views(images, req)
            want = tower_scores(layers, hs.__getitem__, req)
            for a, b in zip(ours, want):
                assert (a is None and b is None) or torch.equal(a, b)


def test_install_runs_a_peer_through_the_stock_generate(hf_llava_next):
    """With a fixed newline policy the peers' counts are a function of the image size, so the stock
    processor and generate run them (llava.hf.install); the vanilla newline rule is refused."""
    from hf_helpers import process

    import llava.hf

    model, processor = hf_llava_next
    with pytest.raises(ValueError, match="newlines='all' or 'none'"):
        llava.hf.install(model, processor, build_compressor("visionzip"))
    comp = build_compressor("visionzip", retention_ratio=0.3, newlines="none")
    sizes, gen = [(500, 300), (300, 700)], dict(max_new_tokens=3, do_sample=False)
    full = process(model, processor, sizes)
    with torch.no_grad():
        ours = llava.hf.generate(model, comp, **full, **gen)
    llava.hf.install(model, processor, comp)
    try:
        short = process(model, processor, sizes)
        with torch.no_grad():
            stock = model.generate(**short, **gen)
    finally:
        llava.hf.uninstall(model, processor)
    assert short["input_ids"].shape[1] < full["input_ids"].shape[1]
    assert torch.equal(stock[:, short["input_ids"].shape[1]:], ours[:, full["input_ids"].shape[1]:])
