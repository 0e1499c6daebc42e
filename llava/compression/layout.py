"""Where an image's visual tokens sit: thumbnail, crops, canvas, and what the LLM sees of it.

One image gives a thumbnail view and ``n = grid_w·grid_h`` crop views of ``N = side²`` tokens
each. Crops tile a ``(grid_h·side) × (grid_w·side)`` token *canvas*; rows ``[top, bottom)``
and columns ``[left, right)`` show the image, the rest is the letterbox LLaVA-NeXT removes
("unpadding"). LLaVA-OneVision then bilinearly *shrinks* a large unpadded canvas
(``anyres_max_9``); each cell of the shrunk canvas stands for the canvas cell nearest its
sample point, so the shrunk canvas is a subset of crop positions and every selection rule
below works on it unchanged. A single view (no crops) may be non-square (Qwen2-VL's merged
grid) and may come without a trailing newline token.

All index maps are built once per layout and device (cached) and never loop over tokens.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from llava.mm_utils import get_anyres_image_grid_shape, unpad_bounds


@dataclass(frozen=True)
class AnyResLayout:
    """Where the views of one image sit (``grid_w = grid_h = 0`` for a single view).

    ``shrink``: ``(rows, cols)`` the unpadded canvas is bilinearly resized to before the LLM
    sees it (``None``: no resize). ``newline``: whether the host appends ``image_newline``
    tokens (after every canvas row; after a single view). ``view``: ``(rows, cols)`` of a
    non-square single view (``None``: ``side × side``).
    """

    grid_w: int
    grid_h: int
    side: int
    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0
    shrink: tuple[int, int] | None = None
    newline: bool = True
    view: tuple[int, int] | None = None

    def __post_init__(self):
        if self.view is not None and self.n_crops:
            raise ValueError("a non-square view is only supported for single-view images")
        if self.shrink is not None:
            if not self.n_crops:
                raise ValueError("a canvas shrink needs crops")
            rows, cols = self.unpadded_shape
            if not (0 < self.shrink[0] <= rows and 0 < self.shrink[1] <= cols):
                raise ValueError(f"shrink {self.shrink} must lie within the unpadded canvas {(rows, cols)}")

    @classmethod
    def for_image(cls, image_size, grid_pinpoints, patch_size: int = 336, side: int = 24) -> AnyResLayout:
        """Layout of an image of ``image_size`` (w, h) under LLaVA-NeXT's AnyRes tiling."""
        gw, gh = get_anyres_image_grid_shape(image_size, grid_pinpoints, patch_size)
        top, bottom, left, right = unpad_bounds(image_size, gh * side, gw * side)
        return cls(gw, gh, side, top, bottom, left, right)

    @classmethod
    def single_view(
        cls, side: int = 24, rows: int | None = None, cols: int | None = None, newline: bool = True
    ) -> AnyResLayout:
        """One view of ``side × side`` tokens, or of ``rows × cols`` when given."""
        view = None if rows is None and cols is None else (int(rows or side), int(cols or side))
        return cls(0, 0, side, newline=newline, view=view)

    @property
    def n_crops(self) -> int:
        return self.grid_w * self.grid_h

    @property
    def n_views(self) -> int:
        return 1 + self.n_crops

    @property
    def view_shape(self) -> tuple[int, int]:
        return self.view if self.view is not None else (self.side, self.side)

    @property
    def tokens_per_view(self) -> int:
        rows, cols = self.view_shape
        return rows * cols

    @property
    def unpadded_shape(self) -> tuple[int, int]:
        """(rows, cols) of the unpadded canvas in tokens."""
        return self.bottom - self.top, self.right - self.left

    @property
    def visible_shape(self) -> tuple[int, int]:
        """(rows, cols) of the canvas the LLM sees (after the shrink, if any)."""
        return self.shrink if self.shrink is not None else self.unpadded_shape

    @property
    def canvas_tokens(self) -> int:
        """``ΣN_j``: the crop tokens the LLM sees, newlines excluded."""
        rows, cols = self.visible_shape
        return rows * cols if self.n_crops else 0

    def num_tokens(self) -> int:
        """The host's uncompressed sequence length: thumbnail + visible canvas + newlines."""
        nl = int(self.newline)
        if self.n_crops == 0:
            return self.tokens_per_view + nl
        rows, cols = self.visible_shape
        return self.tokens_per_view + rows * (cols + nl)


def tensor_cache(maxsize: int):
    """``functools.lru_cache`` for functions that build constant index tensors. They are built
    outside inference mode, so a tensor first made under ``torch.inference_mode()`` (the eval
    drivers, lmms-eval) is still an ordinary tensor when a later call runs with autograd."""

    def deco(fn):
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(fn)
        def cached(*args):
            with torch.inference_mode(False):
                return fn(*args)

        return cached

    return deco


@tensor_cache(maxsize=64)
def _arange(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


def _nearest_source(n_in: int, n_out: int) -> torch.Tensor:
    """For a bilinear resize (align_corners=False) of ``n_in`` cells to ``n_out ≤ n_in``: the
    input cell nearest each output cell's sample point, ``⌊(i + ½)·n_in / n_out⌋`` — strictly
    increasing, so distinct output cells stand for distinct input cells."""
    i = torch.arange(n_out)
    return ((2 * i + 1) * n_in) // (2 * n_out)


@tensor_cache(maxsize=256)
def _crop_cell_index(layout: AnyResLayout, device: torch.device) -> torch.Tensor:
    """``[grid_h·side, grid_w·side]``: canvas cell → ``j·N + t`` (crop j, token t of its grid)."""
    s, n_tok = layout.side, layout.tokens_per_view
    r = torch.arange(layout.grid_h * s, device=device)[:, None]
    c = torch.arange(layout.grid_w * s, device=device)[None, :]
    return ((r // s) * layout.grid_w + c // s) * n_tok + (r % s) * s + (c % s)


@tensor_cache(maxsize=256)
def visible_cells(layout: AnyResLayout, device: torch.device) -> torch.Tensor:
    """``[rows, cols]`` of the visible canvas (raster order) → ``j·N + t``: the crop token each
    visible cell is (or, after a shrink, stands for)."""
    rows, cols = layout.unpadded_shape
    out_rows, out_cols = layout.visible_shape
    r = (layout.top + _nearest_source(rows, out_rows)).to(device)
    c = (layout.left + _nearest_source(cols, out_cols)).to(device)
    return _crop_cell_index(layout, device)[r[:, None], c[None, :]]


@tensor_cache(maxsize=256)
def _valid_mask(layout: AnyResLayout, device: torch.device) -> torch.Tensor:
    """``[n, N]`` bool: the crop tokens the LLM sees."""
    mask = torch.zeros(layout.n_crops * layout.tokens_per_view, dtype=torch.bool, device=device)
    mask[visible_cells(layout, device).reshape(-1)] = True
    return mask.reshape(layout.n_crops, layout.tokens_per_view)


@tensor_cache(maxsize=256)
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


def scatter_visible(visible: torch.Tensor, layout: AnyResLayout) -> torch.Tensor:
    """The visible canvas ``[rows, cols, *]`` (what the LLM sees, e.g. OneVision's shrunk
    features or scores) → ``[n, N, *]`` at the crop positions it stands for, zeros elsewhere.
    Differentiable; dtype and device of ``visible``."""
    rest = visible.shape[2:]
    cells = visible_cells(layout, visible.device).reshape(-1)
    out = visible.new_zeros(layout.n_crops * layout.tokens_per_view, *rest)
    out = out.index_copy(0, cells, visible.reshape(-1, *rest))
    return out.reshape(layout.n_crops, layout.tokens_per_view, *rest)


def crop_valid_mask(layout: AnyResLayout, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[n, N]`` bool: which crop tokens the LLM sees (unpadded, and sampled by the shrink)."""
    return _valid_mask(layout, torch.device(device))


@tensor_cache(maxsize=256)
def crop_token_counts(layout: AnyResLayout, device: torch.device) -> torch.Tensor:
    """``N_j``: visible tokens per crop, ``[n]`` int64."""
    return _valid_mask(layout, device).sum(1)


@dataclass(frozen=True)
class VideoLayout:
    """Where the tokens of one video sit: ``frames`` frames of ``rows × cols`` tokens each, in
    frame order and raster order inside a frame, then (``newline``) one trailing newline token.

    LLaVA-OneVision: every sampled frame is a 27×27 SigLIP view pooled to ``14 × 14`` and one
    ``image_newline`` closes the video. Qwen2-VL / Qwen2.5-VL: a "frame" is one temporal patch
    (two sampled frames) of ``h/2 × w/2`` merged tokens, no newline. ``tokens_per_view`` and
    ``n_views`` name the same quantities as for images, so checks written for views apply.
    """

    frames: int
    rows: int
    cols: int
    newline: bool = False

    def __post_init__(self):
        if self.frames < 1 or self.rows < 1 or self.cols < 1:
            raise ValueError(f"a video needs at least one frame of at least one token, got {self}")

    @property
    def tokens_per_frame(self) -> int:
        return self.rows * self.cols

    @property
    def tokens_per_view(self) -> int:
        return self.tokens_per_frame

    @property
    def n_views(self) -> int:
        return self.frames

    @property
    def view_shape(self) -> tuple[int, int]:
        return self.rows, self.cols

    @property
    def frame_tokens(self) -> int:
        """``F·N``: the frame tokens of the video, the newline excluded."""
        return self.frames * self.tokens_per_frame

    def num_tokens(self) -> int:
        """The host's uncompressed placeholder run: every frame token, then the newline."""
        return self.frame_tokens + int(self.newline)
