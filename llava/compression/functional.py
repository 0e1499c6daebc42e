"""GlobalCom² as pure tensor functions.

Notation (paper §III): one image gives a thumbnail view and ``n = grid_w·grid_h`` crop views
of ``N = side²`` tokens each (side = 24 for CLIP-L/14 at 336 px). ``R`` is the base
retention ratio. Crops tile a ``(grid_h·side) × (grid_w·side)`` token *canvas*; the rows
``[top, bottom)`` and columns ``[left, right)`` of the canvas show the image, the rest is the
letterbox LLaVA-NeXT removes ("unpadding").

Everything is index arithmetic on the features' device: no loops over tokens, and the only
host synchronisation is the final boolean selection whose length is data-dependent.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llava.mm_utils import get_anyres_image_grid_shape, unpad_bounds

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class AnyResLayout:
    """Where the views of one image sit (``grid_w = grid_h = 0`` for a single view)."""

    grid_w: int
    grid_h: int
    side: int
    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    @classmethod
    def for_image(cls, image_size, grid_pinpoints, patch_size: int = 336, side: int = 24) -> AnyResLayout:
        """Layout of an image of ``image_size`` (w, h) under LLaVA-NeXT's AnyRes tiling."""
        gw, gh = get_anyres_image_grid_shape(image_size, grid_pinpoints, patch_size)
        top, bottom, left, right = unpad_bounds(image_size, gh * side, gw * side)
        return cls(gw, gh, side, top, bottom, left, right)

    @classmethod
    def single_view(cls, side: int = 24) -> AnyResLayout:
        return cls(0, 0, side)

    @property
    def n_crops(self) -> int:
        return self.grid_w * self.grid_h

    @property
    def n_views(self) -> int:
        return 1 + self.n_crops

    @property
    def tokens_per_view(self) -> int:
        return self.side * self.side

    @property
    def unpadded_shape(self) -> tuple[int, int]:
        """(rows, cols) of the unpadded canvas in tokens."""
        return self.bottom - self.top, self.right - self.left

    def num_tokens(self) -> int:
        """Vanilla LLaVA-NeXT sequence length: thumbnail + unpadded canvas + row newlines."""
        if self.n_crops == 0:
            return self.tokens_per_view + 1
        rows, cols = self.unpadded_shape
        return self.tokens_per_view + rows * (cols + 1)


@functools.lru_cache(maxsize=64)
def _arange(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


@functools.lru_cache(maxsize=256)
def _crop_cell_index(layout: AnyResLayout, device: torch.device) -> torch.Tensor:
    """``[grid_h·side, grid_w·side]``: canvas cell → ``j·N + t`` (crop j, token t of its grid)."""
    s, n_tok = layout.side, layout.tokens_per_view
    r = torch.arange(layout.grid_h * s, device=device)[:, None]
    c = torch.arange(layout.grid_w * s, device=device)[None, :]
    return ((r // s) * layout.grid_w + c // s) * n_tok + (r % s) * s + (c % s)


@functools.lru_cache(maxsize=256)
def _valid_mask(layout: AnyResLayout, device: torch.device) -> torch.Tensor:
    s = layout.side
    canvas = torch.zeros(layout.grid_h * s, layout.grid_w * s, dtype=torch.bool, device=device)
    canvas[layout.top : layout.bottom, layout.left : layout.right] = True
    return to_crops(canvas, layout)


@functools.lru_cache(maxsize=256)
def _region_ids(side: int, grid_w: int, grid_h: int, device: torch.device) -> torch.Tensor:
    """Thumbnail token → crop region under an even ``grid_h × grid_w`` partition of the
    ``side × side`` map (``side // g`` per part, the remainder to the last part)."""
    r = torch.arange(side, device=device)
    row = (r // max(side // grid_h, 1)).clamp_max(grid_h - 1)
    col = (r // max(side // grid_w, 1)).clamp_max(grid_w - 1)
    return (row[:, None] * grid_w + col[None, :]).reshape(-1)


def to_crops(canvas: torch.Tensor, layout: AnyResLayout) -> torch.Tensor:
    """``[grid_h·side, grid_w·side, *]`` canvas → ``[n, side·side, *]`` per-crop raster order."""
    s, gh, gw = layout.side, layout.grid_h, layout.grid_w
    rest = canvas.shape[2:]
    x = canvas.reshape(gh, s, gw, s, *rest).transpose(1, 2)
    return x.reshape(gh * gw, s * s, *rest)


def crop_valid_mask(layout: AnyResLayout, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[n, N]`` bool: which crop tokens survive unpadding."""
    return _valid_mask(layout, torch.device(device))


@functools.lru_cache(maxsize=256)
def crop_token_counts(layout: AnyResLayout, device: torch.device) -> torch.Tensor:
    """``N_j``: unpadded tokens per crop, ``[n]`` int64."""
    return _valid_mask(layout, device).sum(1)


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
    to the unpadded canvas, cut into crops → ``[n, N]`` float32 (0 on letterbox cells)."""
    s = layout.side
    rows, cols = layout.unpadded_shape
    canvas = thumb_scores.new_zeros(layout.grid_h * s, layout.grid_w * s, dtype=torch.float32)
    if rows == 0 or cols == 0:  # aspect ratio so extreme that no canvas cell shows the image
        return to_crops(canvas, layout)
    small = thumb_scores.float().reshape(1, 1, s, s)
    big = F.interpolate(small, size=(rows, cols), mode="bilinear", align_corners=False)[0, 0]
    canvas[layout.top : layout.bottom, layout.left : layout.right] = big
    return to_crops(canvas, layout)


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


# ----------------------------------------------------------------------------- packing


def pack(
    layout: AnyResLayout,
    thumb_keep: torch.Tensor,
    crop_keep: torch.Tensor | None,
    mode: str = "faithful",
    thumb_order: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay out the kept tokens of one image.

    Returns ``(index, newline_pos)``: ``index`` ``[T]`` points into ``views.reshape(V·N, D)``
    with the value ``V·N`` marking a newline; ``newline_pos`` ``[rows]`` gives, for every
    row that may end in a newline, its position in the sequence — or ``T`` when the row was
    dropped (a scratch slot, so no second host sync is needed to find the newlines).

    ``faithful``: kept thumbnail tokens in raster order, then the unpadded canvas row by row,
    kept tokens at their true positions, one newline after each row that still holds a kept
    token — with everything kept this *is* LLaVA-NeXT's packing.
    ``reference``: the authors' release — thumbnail in ``thumb_order`` (descending score),
    each crop's kept token ``u`` (its index among the crop's unpadded tokens) written at cell
    ``u`` of the crop's ``side × side`` grid, and a newline after every padded canvas row.

    ``thumb_keep`` ``[N]`` bool; ``crop_keep`` ``[n, N]`` bool over true crop positions.
    """
    n_tok, device = layout.tokens_per_view, thumb_keep.device
    newline = layout.n_views * n_tok
    if mode == "reference":
        if thumb_order is None:
            raise ValueError("the reference layout needs thumb_order (thumbnail indices by score)")
        thumb_cand, thumb_sel = thumb_order, torch.ones_like(thumb_order, dtype=torch.bool)
    elif mode == "faithful":
        thumb_cand, thumb_sel = _arange(n_tok, device), thumb_keep
    else:
        raise ValueError(f"unknown layout {mode!r}; valid: faithful, reference")
    if layout.n_crops == 0:
        cand = torch.cat([thumb_cand, thumb_cand.new_full((1,), newline)])
        sel = torch.cat([thumb_sel, thumb_sel.new_ones(1)])
        index = cand[sel]
        return index, torch.full((1,), index.shape[0] - 1, dtype=torch.long, device=device)

    cell = _crop_cell_index(layout, device)  # [H, W] → j·N + t
    if mode == "faithful":
        cell = cell[layout.top : layout.bottom, layout.left : layout.right]
        src = cell + n_tok
        keep = crop_keep.reshape(-1)[cell]
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
    index = cand[sel]  # the one host sync: the length is data-dependent
    slots = thumb_cand.shape[0] + (_arange(rows, device) + 1) * (cols + 1) - 1
    pos = sel.cumsum(0)[slots] - 1
    return index, torch.where(row_nl[:, 0], pos, torch.full_like(pos, index.shape[0]))


def pack_indices(
    layout: AnyResLayout,
    thumb_keep: torch.Tensor,
    crop_keep: torch.Tensor | None,
    mode: str = "faithful",
    thumb_order: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ``index`` part of :func:`pack`."""
    return pack(layout, thumb_keep, crop_keep, mode, thumb_order)[0]


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
