"""GlobalCom² and peers: hand-computed cases, loop oracles for the layouts, properties,
model-level exactness and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from compression_helpers import random_scores

from llava.compression import COMPRESSORS, AnyResLayout, GlobalCom2, build_compressor, option_names
from llava.compression import functional as Fn
from llava.compression.in_llm import InLLMCompressor
from llava.compression.methods import NonFiniteScoresError
from llava.compression.scoring import cls_attention_scores, neg_cos_scores
from llava.mm_utils import process_images, tokenizer_image_token
from llava.testing.tiny_checkpoint import V16_PINPOINTS

N = 576
SIZES = [(1000, 600), (600, 1000), (672, 672), (336, 336), (1500, 400), (400, 1500), (800, 380), (2500, 50)]

#: the methods acting before the LLM (the in-LLM ones have their own tests)
VISION_METHODS = [n for n, c in COMPRESSORS.items() if not issubclass(c, InLLMCompressor)]


def layout(size) -> AnyResLayout:
    return AnyResLayout.for_image(size, V16_PINPOINTS)


def coordinate_views(lay: AnyResLayout) -> torch.Tensor:
    """Features that say where they come from: (view, row, col) of each token."""
    v, r, c = torch.meshgrid(torch.arange(lay.n_views), torch.arange(24), torch.arange(24), indexing="ij")
    return torch.stack([v, r, c], dim=-1).reshape(lay.n_views, N, 3).float()


NEWLINE = torch.tensor([-1.0, -1.0, -1.0])


# ----------------------------------------------------------------------------- loop oracles


def oracle_faithful(lay: AnyResLayout, thumb_keep, crop_keep) -> list[tuple]:
    """Vanilla LLaVA-NeXT packing restricted to the kept tokens, written with loops."""
    seq = [(0, i // 24, i % 24) for i in range(N) if thumb_keep[i]]
    if lay.n_crops == 0:
        return seq + [None]
    for row in range(lay.top, lay.bottom):
        line = []
        for col in range(lay.left, lay.right):
            j = (row // 24) * lay.grid_w + col // 24
            if crop_keep[j, (row % 24) * 24 + col % 24]:
                line.append((1 + j, row % 24, col % 24))
        if line:
            seq += line + [None]
    return seq


def oracle_reference(lay: AnyResLayout, thumb_order, crop_keep) -> list[tuple]:
    """The released code's sequence (REFERENCE §2), written with loops: thumbnail by score,
    the u-th unpadded token of a crop drawn at cell u of its grid, a newline per padded row."""
    seq = [(0, int(i) // 24, int(i) % 24) for i in thumb_order]
    cells = {}
    for j in range(lay.n_crops):
        gy, gx = divmod(j, lay.grid_w)
        unpadded = [
            (r, c) for r in range(24) for c in range(24)
            if lay.top <= gy * 24 + r < lay.bottom and lay.left <= gx * 24 + c < lay.right
        ]
        for u, (r, c) in enumerate(unpadded):
            if crop_keep[j, r * 24 + c]:
                cells[(gy * 24 + u // 24, gx * 24 + u % 24)] = (1 + j, r, c)
    for row in range(lay.grid_h * 24):
        seq += [cells[(row, col)] for col in range(lay.grid_w * 24) if (row, col) in cells]
        seq.append(None)
    return seq


def as_sequence(tokens: torch.Tensor) -> list[tuple]:
    return [None if t[0] < 0 else tuple(int(x) for x in t) for t in tokens]


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("size", SIZES)
def test_keep_all_is_vanilla_packing(size):
    lay = layout(size)
    out = build_compressor("none").compress(coordinate_views(lay), NEWLINE, lay)
    thumb, crops = Fn.keep_all(lay)
    assert as_sequence(out.tokens) == oracle_faithful(lay, thumb, crops)
    assert out.tokens.shape[0] == lay.num_tokens()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.1])
def test_layouts_match_loop_oracles(size, ratio):
    lay = layout(size)
    scores = torch.randn(lay.n_views, N, generator=torch.Generator().manual_seed(hash(size) % 1000))
    views = coordinate_views(lay)
    faithful = GlobalCom2(retention_ratio=ratio, allocation="uniform" if ratio == 1.0 else "softmax_sum")
    reference = GlobalCom2(retention_ratio=ratio, allocation=faithful.allocation, layout="reference")
    f = faithful.compress(views, NEWLINE, lay, scores)
    r = reference.compress(views, NEWLINE, lay, scores)
    assert as_sequence(f.tokens) == oracle_faithful(lay, f.selection.thumb_keep, f.selection.crop_keep)
    assert as_sequence(r.tokens) == oracle_reference(lay, r.selection.thumb_order, r.selection.crop_keep)
    # Same tokens selected, only packed differently.
    assert torch.equal(f.selection.crop_keep, r.selection.crop_keep)
    assert torch.equal(f.selection.thumb_keep, r.selection.thumb_keep)
    assert sorted(t for t in as_sequence(f.tokens) if t) == sorted(t for t in as_sequence(r.tokens) if t)


@pytest.mark.parametrize(
    "size,vanilla,released", [((1000, 600), 1372, 1392), ((600, 1000), 1392, 1392), ((1500, 400), 1460, 1464), ((400, 1500), 1512, 1512)]
)
def test_reference_layout_counts_at_full_retention(size, vanilla, released):
    """REFERENCE §2: the release's crop-part lengths at 100 % vs vanilla LLaVA-NeXT."""
    lay = layout(size)
    scores = torch.randn(lay.n_views, N)
    views = coordinate_views(lay)
    kw = dict(retention_ratio=1.0, allocation="uniform")
    f = GlobalCom2(**kw).compress(views, NEWLINE, lay, scores)
    r = GlobalCom2(**kw, layout="reference").compress(views, NEWLINE, lay, scores)
    assert f.tokens.shape[0] - N == vanilla and r.tokens.shape[0] - N == released
    if vanilla == released and lay.left > 0:  # column padding: same count, different order
        assert as_sequence(f.tokens) != as_sequence(r.tokens)


def test_reference_layout_on_672_square_is_vanilla_but_thumbnail_order():
    lay = layout((672, 672))
    scores = torch.randn(lay.n_views, N)
    views = coordinate_views(lay)
    kw = dict(retention_ratio=1.0, allocation="uniform")
    f = GlobalCom2(**kw).compress(views, NEWLINE, lay, scores)
    r = GlobalCom2(**kw, layout="reference").compress(views, NEWLINE, lay, scores)
    assert torch.equal(f.tokens[N:], r.tokens[N:])
    assert torch.equal(r.tokens[:N, 1:], views[0, scores[0].argsort(descending=True)][:, 1:])


def test_reference_row_padding_shifts_crop_rows_up():
    """1000×600: crop 0's unpadded rows 10..23 are drawn in canvas rows 0..13."""
    lay = layout((1000, 600))
    out = GlobalCom2(retention_ratio=1.0, allocation="uniform", layout="reference").compress(
        coordinate_views(lay), NEWLINE, lay, torch.randn(lay.n_views, N)
    )
    seq = as_sequence(out.tokens)[N:]
    first_row = seq[: seq.index(None)]
    assert first_row == [(1, 10, c) for c in range(24)] + [(2, 10, c) for c in range(24)]
    assert seq.count(None) == 48


# ----------------------------------------------------------------------------- budgets


def _thumb_with_region_sums(sums, grid=(2, 2)) -> torch.Tensor:
    """A 24×24 thumbnail score map whose crop regions sum to ``sums`` (raster order)."""
    gw, gh = grid
    m = torch.zeros(24, 24, dtype=torch.float64)
    for j, s in enumerate(sums):
        r, c = divmod(j, gw)
        h, w = 24 // gh, 24 // gw
        m[r * h : (r + 1) * h, c * w : (c + 1) * w] = s / (h * w)
    return m.reshape(-1)


def test_hand_computed_budgets_2x2():
    # Region sums (0, 0, 0, 10·ln 2), τ = 10 → σ = (.2, .2, .2, .4), mean .25,
    # r = R·(0.95, 0.95, 0.95, 1.15); R = 0.5 → (.475, .475, .475, .575) → k = ⌊576·r⌋.
    lay = layout((672, 672))
    thumb = _thumb_with_region_sums([0, 0, 0, 10 * math.log(2)])
    region = Fn.region_scores(thumb, lay, "sum")
    torch.testing.assert_close(region, torch.tensor([0, 0, 0, 10 * math.log(2)], dtype=torch.float64))
    r = Fn.softmax_budgets(region, 0.5, 10.0)
    torch.testing.assert_close(r, torch.tensor([0.475, 0.475, 0.475, 0.575], dtype=torch.float64), atol=1e-7, rtol=0)
    k = Fn.budget_counts(r, torch.full((4,), N))
    assert k.tolist() == [273, 273, 273, 331]


def test_budget_clip_at_one_and_floors():
    # R = 0.9: r = (.855, .855, .855, 1.035 → 1.0); k = (492, 492, 492, 576). Nothing redistributed.
    r = Fn.softmax_budgets(torch.tensor([0, 0, 0, 10 * math.log(2)], dtype=torch.float64), 0.9, 10.0)
    assert r[3].item() == 1.0
    assert Fn.budget_counts(r, torch.full((4,), N)).tolist() == [492, 492, 492, 576]


def test_budgets_sum_to_n_times_ratio_before_clip():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = int(torch.randint(2, 7, (1,), generator=g))
        s = torch.randn(n, generator=g, dtype=torch.float64) * 30
        r = Fn.softmax_budgets(s, 0.3, 10.0)
        assert abs(r.sum().item() - n * 0.3) < 1e-6  # R = 0.3 keeps every r_j < 1 here


def test_budgets_follow_the_thumbnail_end_to_end():
    lay = layout((672, 672))
    thumb = _thumb_with_region_sums([0, 0, 0, 10 * math.log(2)]).float()
    scores = torch.cat([thumb[None], torch.randn(4, N)])
    out = GlobalCom2(retention_ratio=0.5).compress(torch.randn(5, N, 8), torch.zeros(8), lay, scores)
    assert out.selection.crop_keep.sum(1).tolist() == [273, 273, 273, 331]
    assert int(out.selection.thumb_keep.sum()) == 288
    # 2×2, no padding: every row of the canvas keeps something → 48 newlines.
    assert out.tokens.shape[0] == 288 + 273 * 3 + 331 + 48


def test_other_allocations_hand_computed():
    lay = layout((672, 672))
    # max per region: regions hold maxima (1, 2, 3, 4).
    thumb = torch.zeros(24, 24)
    for j, v in enumerate([1.0, 2.0, 3.0, 4.0]):
        r, c = divmod(j, 2)
        thumb[r * 12, c * 12] = v
    thumb = thumb.reshape(-1)
    mx = Fn.region_scores(thumb, lay, "max")
    assert mx.tolist() == [1.0, 2.0, 3.0, 4.0]
    # n_top-k: the thumbnail's top tokens fall 3:1 into crops 0 and 3 → r ∝ counts.
    keep = torch.zeros(N, dtype=torch.bool)
    keep[[0, 1, 2, 24 * 12 + 12]] = True
    counts = Fn.region_scores(keep.float(), lay, "sum")
    assert counts.tolist() == [3.0, 0.0, 0.0, 1.0]
    torch.testing.assert_close(Fn.count_budgets(counts, 0.25), torch.tensor([0.75, 0, 0, 0.25], dtype=torch.float64))
    r = GlobalCom2(retention_ratio=0.25, allocation="uniform").budgets(lay, thumb, keep)
    assert r.tolist() == [0.25] * 4


def test_uneven_partition_gives_remainder_to_last_crop():
    ids = Fn._region_ids(24, 5, 1, torch.device("cpu")).reshape(24, 24)
    assert ids[0].tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 8


def test_global_map_is_bilinear_resize_over_the_unpadded_grid():
    lay = layout((1000, 600))
    thumb = torch.randn(N)
    g = Fn.global_score_map(thumb, lay)
    big = F.interpolate(thumb.reshape(1, 1, 24, 24), size=(28, 48), mode="bilinear", align_corners=False)[0, 0]
    # crop 0 = rows 10..23 of the first 24 canvas rows, i.e. unpadded rows 0..13, columns 0..23.
    assert torch.equal(g[0].reshape(24, 24)[10:], big[:14, :24])
    assert torch.equal(g[3].reshape(24, 24)[:14], big[14:, 24:])
    assert (g[0].reshape(24, 24)[:10] == 0).all()


def test_alpha_extremes_rank_by_one_score():
    lay = layout((672, 672))
    scores = torch.randn(5, N, generator=torch.Generator().manual_seed(1))
    local = GlobalCom2(retention_ratio=0.3, alpha=0.0).compress(torch.randn(5, N, 4), torch.zeros(4), lay, scores)
    for j in range(4):
        k = int(local.selection.crop_keep[j].sum())
        expect = torch.zeros(N, dtype=torch.bool)
        expect[scores[1 + j].topk(k).indices] = True
        assert torch.equal(local.selection.crop_keep[j], expect)
    glob = GlobalCom2(retention_ratio=0.3, alpha=1.0).compress(torch.randn(5, N, 4), torch.zeros(4), lay, scores)
    gmap = Fn.global_score_map(scores[0], lay)
    for j in range(4):
        k = int(glob.selection.crop_keep[j].sum())
        assert set(glob.selection.crop_keep[j].nonzero().flatten().tolist()) == set(gmap[j].topk(k).indices.tolist())


# ----------------------------------------------------------------------------- properties


def _methods(ratio):
    return [
        build_compressor("globalcom2", retention_ratio=ratio),
        build_compressor("globalcom2", retention_ratio=ratio, layout="reference"),
        build_compressor("globalcom2", retention_ratio=ratio, allocation="ntopk"),
        build_compressor("globalcom2", retention_ratio=ratio, allocation="softmax_max", alpha=0.3),
        build_compressor("fastervlm", retention_ratio=ratio),
        build_compressor("uniform_random", retention_ratio=ratio),
    ]


def test_random_cases_token_counts_and_indices():
    rng = np.random.default_rng(0)
    for case in range(40):
        size = (int(rng.integers(1, 3000)), int(rng.integers(1, 3000)))
        if case % 7 == 0:
            lay = AnyResLayout.single_view()
        else:
            lay = layout(size)
        ratio = float(rng.choice([1.0, 0.75, 0.5, 0.25, 0.1, 0.01, float(rng.uniform(0.01, 1))]))
        scores = torch.from_numpy(rng.standard_normal((lay.n_views, N)).astype(np.float32)) * float(rng.uniform(0.1, 50))
        views = torch.randn(lay.n_views, N, 4)
        valid = Fn.crop_valid_mask(lay) if lay.n_crops else None
        for comp in _methods(ratio):
            out = comp.compress(views, torch.zeros(4), lay, scores)
            sel = out.selection
            k_thumb = int(sel.thumb_keep.sum())
            assert k_thumb == math.floor(N * ratio)
            is_nl = out.index == lay.n_views * N
            n_newlines = int(is_nl.sum())
            assert out.tokens.shape[0] == k_thumb + int(sel.crop_keep.sum()) + n_newlines
            kept = out.index[~is_nl]
            assert kept.unique().numel() == kept.numel() and int(kept.min()) >= 0
            if lay.n_crops:
                assert not (sel.crop_keep & ~valid).any()
                if sel.budgets is not None:
                    k = torch.floor(valid.sum(1).double() * sel.budgets).long()
                    assert torch.equal(sel.crop_keep.sum(1), k)
                    assert (sel.budgets <= 1).all() and (sel.budgets >= 0).all()  # ntopk may give 0
                rows_nl = lay.grid_h * 24 if comp.layout == "reference" else int(
                    Fn.pack_indices(lay, sel.thumb_keep, sel.crop_keep, "faithful").eq(lay.n_views * N).sum()
                )
                assert n_newlines == rows_nl
            else:
                assert n_newlines == 1
            # per-view kept positions are unique, sorted and in range
            for v in range(1, lay.n_views):
                pos = sel.crop_keep[v - 1].nonzero().flatten()
                assert torch.equal(pos, pos.unique()) and (pos < N).all()
            again = comp.compress(views, torch.zeros(4), lay, scores)
            assert torch.equal(again.tokens, out.tokens)  # deterministic


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", VISION_METHODS)
def test_dtype_is_preserved(dtype, name):
    lay = layout((1000, 600))
    comp = build_compressor(name) if name == "none" else build_compressor(name, retention_ratio=0.25)
    out = comp.compress(torch.randn(5, N, 16, dtype=dtype), torch.randn(16, dtype=dtype), lay, random_scores(comp, 5, N))
    assert out.tokens.dtype == dtype


def test_single_view_image_is_compressed_as_a_thumbnail():
    lay = AnyResLayout.single_view()
    scores = torch.randn(1, N)
    out = GlobalCom2(retention_ratio=0.25).compress(coordinate_views(lay), NEWLINE, lay, scores)
    seq = as_sequence(out.tokens)
    assert len(seq) == 144 + 1 and seq[-1] is None
    expect = sorted(scores[0].topk(144).indices.tolist())
    assert [r * 24 + c for _, r, c in seq[:-1]] == expect


# ----------------------------------------------------------------------------- scores


def _clip_layer():
    from transformers import CLIPVisionConfig
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=1)
    layer = CLIPEncoderLayer(cfg).eval()
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return layer


def test_cls_scores_equal_the_full_attention_row():
    layer = _clip_layer()
    h = torch.randn(3, 1 + N, 32)
    attn = layer.self_attn
    x = layer.layer_norm1(h)
    q = attn.q_proj(x).view(3, -1, 4, 8).transpose(1, 2)
    k = attn.k_proj(x).view(3, -1, 4, 8).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) * attn.scale  # [V, H, T, T] — the full map, test-only
    with torch.no_grad():
        torch.testing.assert_close(cls_attention_scores(layer, h, "cls_logits"), logits[:, :, 0, 1:].mean(1))
        torch.testing.assert_close(
            cls_attention_scores(layer, h, "cls_softmax"), logits.softmax(-1)[:, :, 0, 1:].mean(1)
        )


def test_neg_cos_scores():
    x = torch.randn(2, N, 8)
    s = neg_cos_scores(x)
    m = x.mean(1, keepdim=True)
    torch.testing.assert_close(s, -(x * m).sum(-1) / (x.norm(dim=-1) * m.norm(dim=-1)))


def test_tower_tap_matches_hidden_states_of_transformers_clip(tiny):
    model = tiny[1]
    tower = model.get_vision_tower()
    clip = tower.vision_tower
    images = torch.randn(2, 3, 336, 336)
    with torch.no_grad():
        hs = clip(pixel_values=images, output_hidden_states=True).hidden_states
        layers = clip.encoder.layers
        for layer in (-1, -2, 0):
            feats, taken = tower(images, tap=(layer, lambda i, h: h))
            idx = tower.layer_index(layer)
            torch.testing.assert_close(taken, hs[idx])
            torch.testing.assert_close(feats, hs[-2][:, 1:])
        feats, scores = tower(images, tap=(-1, lambda i, h: cls_attention_scores(layers[i], h)))
        torch.testing.assert_close(scores, cls_attention_scores(layers[-1], hs[-2]))


# ----------------------------------------------------------------------------- model level


def _run(tiny, size, compressor, seed=0):
    tok, model, proc, _ = tiny
    rng = np.random.default_rng(seed)
    from PIL import Image

    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    model.compressor = compressor
    ids = tokenizer_image_token("USER: <image>\nWhat is it? ASSISTANT:", tok, return_tensors="pt")[None]
    with torch.no_grad():
        return model(input_ids=ids, images=process_images([img], proc, model.config), image_sizes=[img.size]).logits


@pytest.mark.parametrize("size", [(1000, 600), (600, 1000), (672, 672)])
def test_keep_all_configurations_equal_the_uncompressed_model(tiny, model, size):
    base = _run(tiny, size, None)
    for comp in [
        build_compressor("none"),
        build_compressor("fastervlm", retention_ratio=1.0),
        build_compressor("globalcom2", retention_ratio=1.0, allocation="uniform"),
        build_compressor("uniform_random", retention_ratio=1.0),
    ]:
        assert torch.equal(_run(tiny, size, comp), base), comp


def test_compressed_forward_shortens_the_sequence(tiny, model):
    full = _run(tiny, (1000, 600), None)
    short = _run(tiny, (1000, 600), build_compressor("globalcom2", retention_ratio=0.25))
    info = model.last_images[0].info()
    assert short.shape[1] == full.shape[1] - (info["tokens_uncompressed"] - info["tokens"])
    assert info["thumbnail_kept"] == 144 and len(info["budgets"]) == 4


@pytest.mark.parametrize("name", ["globalcom2", "fastervlm", "uniform_random"])
def test_batch_of_images_equals_single_images(tiny, model, name):
    tok, _, proc, _ = tiny
    from PIL import Image

    rng = np.random.default_rng(5)
    imgs = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in [(1000, 600), (400, 1500), (672, 672)]]
    model.compressor = build_compressor(name, retention_ratio=0.2)
    pixels = process_images(imgs, proc, model.config)
    with torch.no_grad():
        together = model.images_to_tokens(pixels, [im.size for im in imgs])
        alone = [model.images_to_tokens([px], [im.size])[0] for px, im in zip(pixels, imgs)]
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_neg_cos_scoring_runs_through_the_model(tiny, model):
    out = _run(tiny, (1000, 600), build_compressor("globalcom2", retention_ratio=0.25, score="neg_cos"))
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, float("nan")])
def test_bad_ratio_names_value_and_range(ratio):
    with pytest.raises(ValueError, match=r"retention_ratio must be in \(0, 1\]"):
        build_compressor("globalcom2", retention_ratio=ratio)


def test_unknown_method_and_option_list_valid_names():
    with pytest.raises(ValueError, match="valid: none, globalcom2, fastervlm, uniform_random"):
        build_compressor("tome")
    with pytest.raises(TypeError, match="valid: .*retention_ratio"):
        build_compressor("fastervlm", alpha=0.5)
    with pytest.raises(ValueError, match="allocation must be one of"):
        build_compressor("globalcom2", allocation="softmax")
    with pytest.raises(ValueError, match="alpha must be in"):
        build_compressor("globalcom2", alpha=2)
    with pytest.raises(ValueError, match="temperature must be"):
        build_compressor("globalcom2", temperature=0)
    assert "alpha" in option_names("globalcom2")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_scores_are_rejected(bad):
    lay = layout((672, 672))
    scores = torch.randn(5, N)
    scores[2, 7] = bad
    with pytest.raises(NonFiniteScoresError, match="NaN or inf"):
        GlobalCom2().compress(torch.randn(5, N, 4), torch.zeros(4), lay, scores)


def test_view_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="views"):
        GlobalCom2().compress(torch.randn(3, N, 4), torch.zeros(4), layout((672, 672)), torch.randn(3, N))


def test_cli_flags_build_the_compressor():
    import argparse

    from llava.compression.cli import add_compression_args, compressor_from_args

    p = add_compression_args(argparse.ArgumentParser())
    c = compressor_from_args(p.parse_args(["--compression", "globalcom2", "--retention-ratio", "0.1", "--tau", "5",
                                           "--alpha", "0.3", "--allocation", "ntopk", "--layout", "reference"]))
    assert c == GlobalCom2(retention_ratio=0.1, temperature=5.0, alpha=0.3, allocation="ntopk", layout="reference")
    assert compressor_from_args(p.parse_args([])) is None
    with pytest.raises(SystemExit, match="does not take --alpha"):
        compressor_from_args(p.parse_args(["--compression", "fastervlm", "--alpha", "0.3"]))


def test_compression_is_differentiable_when_grad_is_on():
    lay = layout((1000, 600))
    views = torch.randn(5, N, 8, requires_grad=True)
    newline = torch.randn(8, requires_grad=True)
    comp = GlobalCom2(retention_ratio=0.25)
    scores = torch.randn(5, N)
    out = comp.compress(views, newline, lay, scores)
    out.tokens.sum().backward()
    # every kept token gets gradient 1 once; newlines accumulate one per emitted row
    kept = out.index[out.index < 5 * N]
    assert torch.equal(views.grad.reshape(-1, 8)[kept], torch.ones(kept.numel(), 8))
    assert views.grad.sum().item() == kept.numel() * 8
    assert torch.equal(newline.grad, torch.full((8,), float((out.index == 5 * N).sum())))
    with torch.no_grad():
        assert torch.equal(comp.compress(views, newline, lay, scores).tokens, out.tokens)


def test_index_caches_made_under_inference_mode_serve_autograd_later():
    """The cached index tensors are built outside inference mode: a first call under
    ``torch.inference_mode()`` (as the eval drivers and lmms-eval run) must not poison a later
    call with autograd (an inference tensor cannot be saved for backward)."""
    from llava.compression import layout as L

    for fn in (L._arange, L._crop_cell_index, L.visible_cells, L._valid_mask, L._region_ids, L.crop_token_counts):
        fn.cache_clear()
    lay = layout((1000, 600))
    views, newline, scores = torch.randn(5, N, 8), torch.randn(8), torch.randn(5, N)
    comp = GlobalCom2(retention_ratio=0.25)
    with torch.inference_mode():
        first = comp.compress(views, newline, lay, scores).tokens
    views.requires_grad_(True)
    scores.requires_grad_(True)  # scores from a tower run with autograd: index_add_ saves its index
    out = comp.compress(views, newline, lay, scores)
    out.tokens.sum().backward()
    assert torch.equal(out.tokens.detach(), first) and views.grad is not None
