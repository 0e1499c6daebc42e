"""GlobalCom² as pure tensor functions.

Notation (paper §III): one image gives a thumbnail view and ``n = grid_w·grid_h`` crop views
of ``N = side²`` tokens each (side = 24 for CLIP-L/14 at 336 px). ``R`` is the base
retention ratio. Crops tile a ``(grid_h·side) × (grid_w·side)`` token *canvas*; the rows
``[top, bottom)`` and columns ``[left, right)`` of the canvas show the image, the rest is the
letterbox LLaVA-NeXT removes ("unpadding"). The geometry lives in :mod:`.layout`; here, a
crop token is *valid* when the LLM sees it (unpadded, and sampled by OneVision's shrink).

Everything is index arithmetic on the features' device: no loops over tokens, and the only
host synchronisation is the final boolean selection whose length is data-dependent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .layout import (  # noqa: F401  (re-exported: the geometry used to live here)
    AnyResLayout,
    _arange,
    _crop_cell_index,
    _region_ids,
    _valid_mask,
    crop_token_counts,
    crop_valid_mask,
    scatter_visible,
    to_crops,
    visible_cells,
)

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------- selection


def topk_mask(scores: torch.Tensor, k: int | torch.Tensor, k_max: int | None = None) -> torch.Tensor:
    """Boolean mask of the ``k`` highest scores along the last dim.

    ``scores`` ``[..., N]``; ``k`` an int, or a tensor broadcastable to ``scores.shape[:-1]``
    (one count per row, on device — no host sync) with ``k_max`` a host-side upper bound on
    it (default ``N``). Selection is ``torch.topk``'s (as in the authors' release); ``-inf``
    entries are ranked last, so they are kept only if ``k`` asks for them.
    """
    if isinstance(k, int):
        return _mask_at(scores, scores.topk(k, dim=-1, sorted=False).indices)
    k_max = scores.shape[-1] if k_max is None else min(int(k_max), scores.shape[-1])
    top = scores.topk(k_max, dim=-1).indices  # sorted: the first k of each row are its top k
    return _mask_at(scores, top, _arange(k_max, scores.device) < k.unsqueeze(-1))


def thumbnail_topk(scores: torch.Tensor, k: int, ordered: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Top-``k`` of the thumbnail scores ``[N]``: ``(mask [N], indices by descending score or
    None)`` — both from one ``topk``, so the mask and the order always agree."""
    top = scores.topk(k, sorted=ordered).indices
    return _mask_at(scores, top), (top if ordered else None)


def _mask_at(like: torch.Tensor, index: torch.Tensor, value: torch.Tensor | bool = True) -> torch.Tensor:
    """A bool tensor shaped like ``like``, ``value`` at ``index`` along the last dim."""
    mask = torch.zeros(like.shape, dtype=torch.bool, device=like.device)
    return mask.scatter_(-1, index, value)


def region_scores(thumb_scores: torch.Tensor, layout: AnyResLayout, reduce: str = "sum") -> torch.Tensor:
    """``s_j``: thumbnail scores ``[N]`` pooled over each crop's region of the thumbnail map
    (``"sum"`` as in the paper, or ``"max"``) → ``[n]`` in float64."""
    ids = _region_ids(layout.side, layout.grid_w, layout.grid_h, thumb_scores.device)
    s = thumb_scores.to(_wide(thumb_scores.device))
    out = torch.zeros(layout.n_crops, dtype=s.dtype, device=s.device)
    if reduce == "sum":
        return out.index_add_(0, ids, s)
    if reduce == "max":
        return out.fill_(NEG_INF).scatter_reduce_(0, ids, s, reduce="amax")
    raise ValueError(f"unknown region reduction {reduce!r}; valid: sum, max")


def softmax_budgets(region: torch.Tensor, ratio: float, temperature: float) -> torch.Tensor:
    """The commander's rule: ``σ = softmax((s − max s)/τ)`` (with ``+1e-8`` in the
    denominator) and ``r_j = min(1, R·(1 + σ_j − mean σ))`` → ``[n]`` float64."""
    e = torch.exp((region - region.max()) / temperature)
    sigma = e / (e.sum() + 1e-8)
    return (ratio * (1.0 + sigma - sigma.mean())).clamp_max(1.0)


def count_budgets(counts: torch.Tensor, ratio: float) -> torch.Tensor:
    """``r_j = min(1, R·n·c_j / Σc)``: budgets proportional to per-crop counts (n_top-k)."""
    c = counts.to(_wide(counts.device))
    return (ratio * c.numel() * c / c.sum().clamp_min(1.0)).clamp_max(1.0)


def budget_counts(budgets: torch.Tensor, n_valid: torch.Tensor) -> torch.Tensor:
    """``k_j = ⌊N_j · r_j⌋`` as int64 (no redistribution of what the floor or clip drops)."""
    return torch.floor(n_valid.to(budgets.dtype) * budgets).long()


def global_score_map(thumb_scores: torch.Tensor, layout: AnyResLayout) -> torch.Tensor:
    """``s^G``: the ``side × side`` thumbnail scores bilinearly resized (align_corners=False)
    to the canvas the LLM sees (unpadded, shrunk if the host shrinks it), placed at the crop
    positions → ``[n, N]`` float32 (0 on tokens the LLM does not see)."""
    s = layout.side
    rows, cols = layout.visible_shape
    if rows == 0 or cols == 0:  # aspect ratio so extreme that no canvas cell shows the image
        return thumb_scores.new_zeros(layout.n_crops, layout.tokens_per_view, dtype=torch.float32)
    small = thumb_scores.float().reshape(1, 1, s, s)
    big = F.interpolate(small, size=(rows, cols), mode="bilinear", align_corners=False)[0, 0]
    return scatter_visible(big, layout)


def combine_scores(
    global_scores: torch.Tensor, local_scores: torch.Tensor, valid: torch.Tensor, alpha: float
) -> torch.Tensor:
    """``s = α·ŝ^G + (1−α)·ŝ^L`` with each term L2-normalised over the crop's valid tokens;
    letterbox tokens get ``-inf``. All ``[n, N]``."""
    w = valid.to(torch.float32)
    g = global_scores.float() * w
    loc = local_scores.float() * w
    g = g * (alpha / g.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    loc = loc * ((1.0 - alpha) / loc.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    return (g + loc).masked_fill_(~valid, NEG_INF)


def _wide(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def reconcile_total(keep: torch.Tensor, ranking: torch.Tensor, total: int) -> torch.Tensor:
    """Make the crop selection ``keep`` ``[n, N]`` hold exactly ``total`` tokens — adding the
    best-ranked tokens it left out or dropping its worst-ranked kept ones, ranked by
    ``ranking`` ``[n, N]`` across all crops (``-inf`` = never kept). Used by the fixed-count
    ("exact") budgets: the per-crop split stays adaptive, the total becomes a function of the
    image size. Ties go to the lower index; no host sync."""
    flat, s = keep.reshape(-1), ranking.reshape(-1).float()
    valid = s > NEG_INF
    short = total - flat.sum()  # > 0: add that many; < 0: drop -short
    add_rank = _descending_rank(s.masked_fill(flat | ~valid, NEG_INF))
    drop_rank = _descending_rank((-s).masked_fill(~flat, NEG_INF))
    add = (add_rank < short) & valid & ~flat
    drop = (drop_rank < -short) & flat
    return ((flat | add) & ~drop).reshape(keep.shape)


def _descending_rank(x: torch.Tensor) -> torch.Tensor:
    """Rank of each entry of ``x`` ``[M]`` in descending order (0 = largest; stable)."""
    order = torch.argsort(x, descending=True, stable=True)
    return torch.empty_like(order).scatter_(0, order, _arange(x.shape[0], x.device))


# ----------------------------------------------------------------------------- packing


class PackPlan(NamedTuple):
    """How one image's kept tokens are laid out (see :func:`pack_plan`)."""

    index: torch.Tensor  # [T] into views.reshape(V·N, ·); V·N marks a newline
    newline_pos: torch.Tensor  # [rows] sequence position of each row's newline (T if dropped)
    kept: torch.Tensor | None  # [T] positions in the uncompressed sequence (None: reference layout)


NEWLINE_POLICIES = ("kept", "all", "none")


def pack_plan(
    layout: AnyResLayout,
    thumb_keep: torch.Tensor,
    crop_keep: torch.Tensor | None,
    mode: str = "faithful",
    thumb_order: torch.Tensor | None = None,
    newlines: str = "kept",
    crop_order: str = "forward",
) -> PackPlan:
    """Lay out the kept tokens of one image.

    ``index`` ``[T]`` points into ``views.reshape(V·N, D)`` with the value ``V·N`` marking a
    newline; ``newline_pos`` ``[rows]`` gives, for every row that may end in a newline, its
    position in the sequence — or ``T`` when the row has none (a scratch slot, so no second
    host sync is needed to find the newlines); ``kept`` ``[T]`` gives each packed token's
    position in the host's *uncompressed* sequence (the faithful layout packs a subsequence of
    it), ``None`` for the reference layout.

    ``faithful``: kept thumbnail tokens in raster order, then the visible canvas row by row,
    kept tokens at their true positions, and a newline after each row that still holds a kept
    token (``newlines="kept"``, vanilla LLaVA-NeXT's rule), after every row
    (``newlines="all"``, a token count fixed by the image size) or after none
    (``newlines="none"``; a single view keeps its own newline) — with everything kept and the
    vanilla rule this *is* the host's packing. A layout without newlines (Qwen2-VL) never gets one.
    ``reference``: the authors' release — thumbnail in ``thumb_order`` (descending score),
    each crop's kept token ``u`` (its index among the crop's unpadded tokens) written at cell
    ``u`` of the crop's ``side × side`` grid, and a newline after every padded canvas row.

    ``crop_order="reverse"`` packs the crops in reverse raster order: the canvas is laid out
    with crop ``(r, c)`` in the slot of crop ``(grid_h−1−r, grid_w−1−c)``, each crop keeping its
    own rows, columns and visible (unpadded) cells — the same tokens, and the same newline
    rule, in another order (so ``kept`` is ``None``: not a subsequence of the host's run).

    ``thumb_keep`` ``[N]`` bool; ``crop_keep`` ``[n, N]`` bool over true crop positions.
    """
    if newlines not in NEWLINE_POLICIES:
        raise ValueError(f"unknown newline policy {newlines!r}; valid: {', '.join(NEWLINE_POLICIES)}")
    n_tok, device = layout.tokens_per_view, thumb_keep.device
    newline = layout.n_views * n_tok
    if mode == "reference":
        if thumb_order is None:
            raise ValueError("the reference layout needs thumb_order (thumbnail indices by score)")
        if layout.shrink is not None or not layout.newline or layout.view is not None:
            raise ValueError("the reference layout reproduces LLaVA-NeXT's release; it has no shrunk canvas, "
                             "non-square view or newline-free variant")
        thumb_cand, thumb_sel = thumb_order, torch.ones_like(thumb_order, dtype=torch.bool)
    elif mode == "faithful":
        thumb_cand, thumb_sel = _arange(n_tok, device), thumb_keep
    else:
        raise ValueError(f"unknown layout {mode!r}; valid: faithful, reference")
    if layout.n_crops == 0:
        nl = int(layout.newline)
        cand = torch.cat([thumb_cand, thumb_cand.new_full((nl,), newline)])
        sel = torch.cat([thumb_sel, thumb_sel.new_ones(nl)])
        pick = sel.nonzero().squeeze(1)  # the one host sync: the length is data-dependent
        index = cand[pick]
        kept = pick if mode == "faithful" else None
        return PackPlan(index, torch.full((nl,), index.shape[0] - 1, dtype=torch.long, device=device), kept)

    cell = _crop_cell_index(layout, device)  # [H, W] → j·N + t
    if mode == "faithful":
        cell = visible_cells(layout, device)
    if crop_order == "reverse":
        cell = mirror_crops(cell, layout)
    elif crop_order != "forward":
        raise ValueError(f"unknown crop order {crop_order!r}; valid: forward, reverse")
    if mode == "faithful":
        src = cell + n_tok
        keep = crop_keep.reshape(-1)[cell]
        if not layout.newline or newlines == "none":
            row_nl = keep.new_zeros(keep.shape[0], 1)
        elif newlines == "all":
            row_nl = keep.new_ones(keep.shape[0], 1)
        else:
            # A row keeps its newline while it holds a kept token — or when it shows no image
            # column at all (width-0 canvas of an extreme aspect ratio), as in LLaVA-NeXT.
            row_nl = keep.any(dim=1, keepdim=True) | (keep.shape[1] == 0)
    else:
        valid = _valid_mask(layout, device)
        # u-th unpadded token of crop j sits at grid position order[j, u]; it is drawn at cell u.
        order = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)  # [n, N]
        base = torch.arange(layout.n_crops, device=device)[:, None] * n_tok
        src = (order + base + n_tok).reshape(-1)[cell]
        keep = crop_keep.gather(1, order).reshape(-1)[cell]
        row_nl = keep.new_ones(keep.shape[0], 1)
    rows, cols = keep.shape
    cand = torch.cat([thumb_cand, torch.cat([src, src.new_full((rows, 1), newline)], dim=1).reshape(-1)])
    sel = torch.cat([thumb_sel, torch.cat([keep, row_nl], dim=1).reshape(-1)])
    pick = sel.nonzero().squeeze(1)  # the one host sync: the length is data-dependent
    index = cand[pick]
    slots = thumb_cand.shape[0] + (_arange(rows, device) + 1) * (cols + 1) - 1
    pos = sel.cumsum(0)[slots] - 1
    newline_pos = torch.where(row_nl[:, 0], pos, torch.full_like(pos, index.shape[0]))
    kept = None
    if mode == "faithful" and crop_order == "forward":
        # Candidates are the uncompressed sequence, plus a newline slot per row when the host has none.
        kept = pick if layout.newline else pick - torch.div(pick - n_tok, cols + 1, rounding_mode="floor").clamp_min(0)
    return PackPlan(index, newline_pos, kept)


def mirror_crops(cell: torch.Tensor, layout: AnyResLayout) -> torch.Tensor:
    """A canvas map ``[rows, cols]`` (cell → ``j·N + t``) re-ordered so that the crop blocks
    come in reverse raster order: rows sorted by ``(grid_h−1−crop row, row within the crop)``,
    columns by ``(grid_w−1−crop column, column within the crop)``; each crop's own cells keep
    their order."""
    s, n_tok, gw, gh = layout.side, layout.tokens_per_view, layout.grid_w, layout.grid_h
    if cell.numel() == 0:
        return cell
    first_col, first_row = cell[:, 0], cell[0, :]
    row_key = (gh - 1 - (first_col // n_tok) // gw) * s + (first_col % n_tok) // s
    col_key = (gw - 1 - (first_row // n_tok) % gw) * s + (first_row % n_tok) % s
    rows = torch.argsort(row_key, stable=True)
    cols = torch.argsort(col_key, stable=True)
    return cell[rows][:, cols]


def pack(
    layout: AnyResLayout,
    thumb_keep: torch.Tensor,
    crop_keep: torch.Tensor | None,
    mode: str = "faithful",
    thumb_order: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, newline_pos)`` of :func:`pack_plan` (vanilla newline rule)."""
    plan = pack_plan(layout, thumb_keep, crop_keep, mode, thumb_order)
    return plan.index, plan.newline_pos


def pack_indices(
    layout: AnyResLayout,
    thumb_keep: torch.Tensor,
    crop_keep: torch.Tensor | None,
    mode: str = "faithful",
    thumb_order: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ``index`` part of :func:`pack_plan`."""
    return pack_plan(layout, thumb_keep, crop_keep, mode, thumb_order).index


def gather_tokens(
    views: torch.Tensor,
    newline: torch.Tensor,
    index: torch.Tensor,
    newline_pos: torch.Tensor | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``views`` ``[V, N, C]``, ``newline`` ``[D]`` and a :func:`pack` plan → ``[T, D]``.

    One gather, then (if given) ``project`` — a per-token map such as LLaVA's projector, so
    ``project(gather(x)) == gather(project(x))`` and dropped tokens are never projected — then
    the newline rows written in place. Differentiable; dtype of the (projected) features.
    """
    flat = views.reshape(-1, views.shape[-1])
    if newline_pos is None:
        newline_pos = (index == flat.shape[0]).nonzero().flatten()
    # One extra (scratch) row receives the newlines of dropped rows, so no sync is needed.
    src = F.pad(index.clamp_max(flat.shape[0] - 1), (0, 1))
    out = flat.index_select(0, src)
    if project is not None:
        out = project(out)
    # the projector may sit on another device than the vision features (device_map)
    out.index_put_((newline_pos.to(out.device),), newline.to(device=out.device, dtype=out.dtype))
    return out[: index.shape[0]]


def keep_all(layout: AnyResLayout, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Masks that keep every (unpadded) token: ``([N], [n, N])``."""
    device = torch.device(device)
    return (
        torch.ones(layout.tokens_per_view, dtype=torch.bool, device=device),
        _valid_mask(layout, device).clone() if layout.n_crops else torch.zeros(0, layout.tokens_per_view, dtype=torch.bool, device=device),
    )


def floor_count(n: int, ratio: float) -> int:
    """``⌊n·R⌋`` on the host (for counts that depend only on shapes)."""
    return int(math.floor(n * ratio))
