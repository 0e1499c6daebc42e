"""The generalised core: shrunk canvases (OneVision), non-square newline-free single views
(Qwen), kept positions, fixed-count ("exact") budgets and their reconciliation."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from llava.compression import AnyResLayout, GlobalCom2, build_compressor, reconcile_total, scatter_visible
from llava.compression import functional as Fn
from llava.testing.tiny_checkpoint import V16_PINPOINTS

SIZES = [(1000, 600), (600, 1000), (672, 672), (336, 336), (1500, 400), (400, 1500), (800, 380), (2500, 50)]
# (layout, note): OneVision-style 8×8 views, unpadded and shrunk
SHRUNK = [
    AnyResLayout(3, 2, 8, 0, 16, 2, 22, shrink=(11, 14)),
    AnyResLayout(4, 4, 8, 3, 29, 0, 32, shrink=(21, 26)),
    AnyResLayout(2, 3, 8, 0, 24, 0, 16, shrink=(24, 16)),  # a "shrink" to the same size is the identity
]


def coordinate_canvas(rows: int, cols: int) -> torch.Tensor:
    """A visible canvas whose tokens say where they are: (1, row, col)."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([torch.ones_like(r), r, c], dim=-1).float()


def views_with_canvas(lay: AnyResLayout) -> torch.Tensor:
    """Thumbnail tokens (0, t, -1) then the visible canvas scattered to its crop positions."""
    n = lay.tokens_per_view
    thumb = torch.stack([torch.zeros(n), torch.arange(n).float(), -torch.ones(n)], dim=-1)
    return torch.cat([thumb[None], scatter_visible(coordinate_canvas(*lay.visible_shape), lay)])


NEWLINE = torch.tensor([-1.0, -1.0, -1.0])


def oracle_shrunk(lay: AnyResLayout, thumb_keep, crop_keep, all_newlines=False) -> list:
    """The packed sequence with loops and exact fractions: visible cell (i, j) stands for the
    canvas cell nearest its bilinear sample point, ⌊(i + ½)·rows/rows'⌋."""
    s, n = lay.side, lay.tokens_per_view
    seq = [(0, t, -1) for t in range(n) if thumb_keep[t]]
    rows, cols = lay.unpadded_shape
    vr, vc = lay.visible_shape
    for i in range(vr):
        line = []
        r = lay.top + int((Fraction(2 * i + 1, 2) * Fraction(rows, vr)) // 1)
        for j in range(vc):
            c = lay.left + int((Fraction(2 * j + 1, 2) * Fraction(cols, vc)) // 1)
            crop = (r // s) * lay.grid_w + c // s
            if crop_keep[crop, (r % s) * s + c % s]:
                line.append((1, i, j))
        if line or all_newlines:
            seq += line + [None]
    return seq


def as_sequence(tokens: torch.Tensor) -> list:
    return [None if t[0] < 0 else tuple(int(x) for x in t) for t in tokens]


@pytest.mark.parametrize("lay", SHRUNK)
@pytest.mark.parametrize("budget", ["adaptive", "exact"])
def test_shrunk_canvas_packing_matches_a_loop_oracle(lay, budget):
    views = views_with_canvas(lay)
    scores = torch.randn(lay.n_views, lay.tokens_per_view, generator=torch.Generator().manual_seed(1))
    full = build_compressor("none").compress(views, NEWLINE, lay)
    thumb, crops = Fn.keep_all(lay)
    assert as_sequence(full.tokens) == oracle_shrunk(lay, thumb, crops)
    assert full.tokens.shape[0] == lay.num_tokens() == lay.tokens_per_view + lay.visible_shape[0] * (lay.visible_shape[1] + 1)
    comp = GlobalCom2(retention_ratio=0.3, budget=budget)
    out = comp.compress(views, NEWLINE, lay, scores)
    sel = out.selection
    assert as_sequence(out.tokens) == oracle_shrunk(lay, sel.thumb_keep, sel.crop_keep, budget == "exact")
    assert torch.equal(out.tokens, full.tokens[out.kept])  # kept: positions in the uncompressed sequence
    assert not (sel.crop_keep & ~Fn.crop_valid_mask(lay)).any()


def test_global_score_map_is_the_thumbnail_resized_to_the_visible_canvas():
    lay = SHRUNK[0]
    thumb = torch.randn(64)
    g = Fn.global_score_map(thumb, lay)
    big = torch.nn.functional.interpolate(thumb.view(1, 1, 8, 8), size=lay.visible_shape, mode="bilinear")[0, 0]
    visible = Fn.visible_cells(lay, torch.device("cpu"))
    torch.testing.assert_close(g.reshape(-1)[visible], big)
    assert int((g != 0).sum()) == big.numel()


def test_non_square_single_view_without_newline():
    lay = AnyResLayout.single_view(rows=5, cols=9, newline=False)
    assert lay.tokens_per_view == 45 and lay.num_tokens() == 45
    views = torch.arange(45.0).view(1, 45, 1)
    none = build_compressor("none").compress(views, torch.zeros(1), lay)
    assert torch.equal(none.tokens[:, 0], torch.arange(45.0)) and torch.equal(none.kept, torch.arange(45))
    scores = torch.randn(1, 45)
    out = GlobalCom2(retention_ratio=0.3).compress(views, torch.zeros(1), lay, scores)
    top = scores[0].topk(13).indices.sort().values
    assert torch.equal(out.kept, top) and torch.equal(out.tokens[:, 0], top.float())
    assert GlobalCom2(retention_ratio=0.3).token_count(lay) == 13
    with pytest.raises(ValueError, match="reference layout"):
        GlobalCom2(layout="reference").compress(views, torch.zeros(1), lay, scores)


# ----------------------------------------------------------------------------- kept positions


@pytest.mark.parametrize("size", SIZES)
def test_kept_positions_index_the_uncompressed_sequence(size):
    lay = AnyResLayout.for_image(size, V16_PINPOINTS)
    views = torch.randn(lay.n_views, 576, 4)
    scores = torch.randn(lay.n_views, 576)
    full = build_compressor("none").compress(views, torch.ones(4), lay)
    for comp in (GlobalCom2(retention_ratio=0.2), build_compressor("fastervlm", retention_ratio=0.5, budget="exact")):
        out = comp.compress(views, torch.ones(4), lay, scores)
        assert torch.equal(out.tokens, full.tokens[out.kept])
        assert bool((out.kept.diff() > 0).all())
    assert GlobalCom2(layout="reference").compress(views, torch.ones(4), lay, scores).kept is None


def test_our_tree_records_carry_kept_positions(tiny, model):
    from hf_helpers import random_image

    from llava.mm_utils import process_images

    _, _, proc, _ = tiny
    img = random_image(1000, 600)
    pixels = process_images([img], proc, model.config)
    with torch.no_grad():
        full = model.images_to_tokens(pixels, [img.size])[0]
        model.compressor = GlobalCom2(retention_ratio=0.25)
        short = model.images_to_tokens(pixels, [img.size])[0]
    kept = model.last_images[0].kept
    torch.testing.assert_close(short, full[kept], atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------- exact budgets


def _layouts():
    return [AnyResLayout.for_image(s, V16_PINPOINTS) for s in SIZES] + SHRUNK


@pytest.mark.parametrize("allocation", GlobalCom2.ALLOCATIONS)
@pytest.mark.parametrize("ratio", [0.07, 0.25, 0.5, 1.0])
def test_exact_budget_count_is_a_function_of_the_image_size(allocation, ratio):
    g = torch.Generator().manual_seed(7)
    for lay in _layouts():
        for mode in ("faithful", "reference") if lay.shrink is None else ("faithful",):
            comp = GlobalCom2(retention_ratio=ratio, allocation=allocation, budget="exact", layout=mode)
            adaptive = GlobalCom2(retention_ratio=ratio, allocation=allocation, layout=mode)
            assert adaptive.token_count(lay) is None
            for _ in range(2):
                scores = torch.randn(lay.n_views, lay.tokens_per_view, generator=g) * 5
                out = comp.compress(torch.zeros(lay.n_views, lay.tokens_per_view, 1), torch.zeros(1), lay, scores)
                assert out.index.shape[0] == comp.token_count(lay)
                assert int(out.selection.crop_keep.sum()) == int(ratio * lay.canvas_tokens)
                assert int(out.selection.thumb_keep.sum()) == int(ratio * lay.tokens_per_view)
                # the split stays adaptive: the budgets are the adaptive method's
                ref = adaptive.compress(torch.zeros(lay.n_views, lay.tokens_per_view, 1), torch.zeros(1), lay, scores)
                if out.selection.budgets is not None:
                    assert torch.equal(out.selection.budgets, ref.selection.budgets)


def test_reconcile_total_adds_the_best_and_drops_the_worst():
    g = torch.Generator().manual_seed(3)
    ranking = torch.randn(4, 10, generator=g)
    ranking[:, 8:] = float("-inf")  # never eligible
    keep = Fn.topk_mask(ranking, 3)
    for total in (0, 5, 12, 20, 32):
        out = reconcile_total(keep, ranking, total)
        assert int(out.sum()) == total
        assert not out[:, 8:].any()
        if total >= 12:
            assert bool((out | ~keep).all())  # nothing dropped
            added = out & ~keep
            if added.any() and (~out[:, :8]).any():
                assert ranking[added].min() >= ranking[:, :8][~out[:, :8]].max()
        else:
            assert not (out & ~keep).any()  # nothing added
            dropped = keep & ~out
            if dropped.any() and out.any():
                assert ranking[out].min() >= ranking[dropped].max()
    assert torch.equal(reconcile_total(keep, ranking, 12), keep)


def test_budget_option_is_validated_and_on_the_cli():
    import argparse

    from llava.compression.cli import add_compression_args, compressor_from_args

    with pytest.raises(ValueError, match="budget must be one of adaptive, exact"):
        build_compressor("globalcom2", budget="fixed")
    p = add_compression_args(argparse.ArgumentParser())
    c = compressor_from_args(p.parse_args(["--compression", "fastervlm", "--budget", "exact", "--score", "attn_received"]))
    assert c.budget == "exact" and c.score == "attn_received"
    assert build_compressor("globalcom2").budget == "adaptive"
