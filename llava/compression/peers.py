"""GlobalCom²'s vision-stage peers — VisionZip, HiRED, PruMerge, PruMerge+ — as frozen configs.

They run where GlobalCom² runs (after the vision tower, before the LLM, one image at a time) and
at the same total budget: an image keeps ``T = ⌊N·R⌋ + ⌊R·ΣN_j⌋`` visual tokens (the
thumbnail's share plus R of the crop tokens the LLM sees), split among its views by each peer's
own rule for AnyRes. Kept tokens are packed like every other method's (``faithful`` layout: at
their true positions, ``newlines`` as chosen); a merged token sits at the position of the token
it was merged into. The rules, read from each peer's public code (:mod:`.peer_functional`):

- **VisionZip**: per view ``R`` of its tokens; dominant tokens by [CLS] attention (layer −2,
  post-softmax, head mean), plus contextual tokens merged by the head-mean keys of that layer.
- **HiRED**: ``α`` of ``T`` to the thumbnail; the crops share the rest by how many of the
  thumbnail's top ``⌊N·(1−α)⌋`` layer-0 [CLS]-attention tokens fall in each; then every view keeps
  its top tokens by layer −2 [CLS] attention.
- **PruMerge**: per view, the [CLS]-attention outliers (IQR rule; last layer, all heads as one),
  each merged with its 32 most key-similar tokens; **PruMerge+** adds spatially uniform samples.
  ``budget="exact"`` (default) shares ``T`` among the views in proportion to their outlier counts;
  ``budget="adaptive"`` is PruMerge's own count (the outliers, plus PruMerge+'s samples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from . import functional as Fn
from . import peer_functional as P
from .functional import NEWLINE_POLICIES, AnyResLayout
from .methods import (
    BUDGETS,
    Compressor,
    _check_choice,
    _check_ratio,
    register_compressor,
)
from .records import ScoreRequest, Selection
from .scoring import TowerScores


@dataclass(frozen=True)
class VisionStagePeer(Compressor):
    """Shared by the peers: the ratio, the image's budget ``T`` and the newline policy
    (``kept``: vanilla, a newline after each canvas row still holding a token; ``all``; ``none``:
    no canvas newlines, as the peers' own LLaVA-NeXT code)."""

    retention_ratio: float = 0.25
    newlines: str = "kept"

    def __post_init__(self):
        super().__post_init__()
        _check_ratio(self.retention_ratio)
        _check_choice(self.newlines, NEWLINE_POLICIES, "newlines")
        if self.layout != "faithful":
            raise ValueError(f"{self.name} packs with layout='faithful' only ('reference' is GlobalCom²'s release)")

    def check_geometry(self, tokens_per_view: int) -> None:
        if Fn.floor_count(tokens_per_view, self.retention_ratio) == 0:
            raise ValueError(
                f"retention_ratio {self.retention_ratio!r} keeps no token of a {tokens_per_view}-token view "
                f"(floor({tokens_per_view}·R) = 0); the minimum is 1/{tokens_per_view} = {1 / tokens_per_view:.6g}"
            )

    def newline_policy(self) -> str:
        return self.newlines

    def shares(self, layout: AnyResLayout) -> tuple[int, int]:
        """``(⌊N·R⌋, ⌊R·ΣN_j⌋)``: the thumbnail's and the crops' parts of the image's budget ``T``."""
        R = self.retention_ratio
        return Fn.floor_count(layout.tokens_per_view, R), Fn.floor_count(layout.canvas_tokens, R)

    def token_count(self, layout: AnyResLayout) -> int | None:
        total = sum(self.shares(layout))
        if layout.n_crops == 0:
            return total + int(layout.newline)
        if self.newlines == "kept":
            return None
        rows = layout.visible_shape[0] if self.newlines == "all" else 0
        return total + rows * int(layout.newline)

    def require_tower_scores(self, scores) -> TowerScores:
        if not isinstance(scores, TowerScores):
            raise ValueError(
                f"{self.name} needs the vision tower's {self.score_request()} (a TowerScores); run it through "
                "the model or llava.hf, whose towers compute it"
            )
        return scores

    @staticmethod
    def view_valid(layout: AnyResLayout, device: torch.device) -> torch.Tensor:
        """``[V, N]`` bool: the tokens of each view the LLM sees (thumbnail first)."""
        thumb = torch.ones(1, layout.tokens_per_view, dtype=torch.bool, device=device)
        if layout.n_crops == 0:
            return thumb
        return torch.cat([thumb, Fn.crop_valid_mask(layout, device)])


def _per_view_ratio(comp: VisionStagePeer, layout: AnyResLayout, device: torch.device) -> torch.Tensor:
    """``[V]`` int64: the thumbnail ``⌊N·R⌋``, each crop about ``R·N_j`` (Webster-apportioned so that
    the crops keep ``⌊R·ΣN_j⌋`` in total) — every view the same ratio."""
    thumb, crops = comp.shares(layout)
    head = torch.full((1,), thumb, dtype=torch.long, device=device)
    if layout.n_crops == 0:
        return head
    n_valid = Fn.crop_token_counts(layout, device)
    return torch.cat([head, P.apportion(crops, n_valid, n_valid, layout.tokens_per_view)])


@register_compressor
@dataclass(frozen=True)
class VisionZip(VisionStagePeer):
    """VisionZip (Yang et al., CVPR 2025). Every view keeps ``R`` of its tokens (its AnyRes rule:
    the same count in every view), ``contextual_ratio`` of them (10/64: the 54 + 10 split) as
    contextual tokens, the rest dominant: the top tokens by [CLS] attention (post-softmax, head
    mean, layer ``score_layer``). The remaining tokens, in index order, give evenly spaced targets;
    the others merge into their most key-similar target (head-mean keys of the same layer), a
    target becoming ``x_t + mean(merged)`` (``merge="release"``), the mean (``"mean"``) or staying
    ``x_t`` (``"none"``)."""

    name: ClassVar[str] = "visionzip"
    contextual_ratio: float = 10 / 64
    merge: str = "release"
    score_layer: int = -2

    def __post_init__(self):
        super().__post_init__()
        if not (math.isfinite(self.contextual_ratio) and 0.0 <= self.contextual_ratio <= 1.0):
            raise ValueError(f"contextual_ratio must be in [0, 1], got {self.contextual_ratio!r}")
        _check_choice(self.merge, P.MERGES, "merge")

    def score_request(self):
        return ScoreRequest("cls_softmax", self.score_layer, keys="head_mean")

    def select(self, layout, scores, views):
        sig = self.require_tower_scores(scores)
        valid = self.view_valid(layout, views.device)
        k = _per_view_ratio(self, layout, views.device)  # [V]
        n_ctx = P.round_share(k, self.contextual_ratio)
        ranking = sig.scores.float().masked_fill(~valid, Fn.NEG_INF)
        dominant = Fn.topk_mask(ranking, k - n_ctx, layout.tokens_per_view)
        targets, merged = P.contextual_merge(views, sig.keys, dominant, valid, n_ctx, self.merge)
        keep = dominant | targets
        return Selection(keep[0], keep[1:], views=None if self.merge == "none" else merged)


@register_compressor
@dataclass(frozen=True)
class HiRED(VisionStagePeer):
    """HiRED (Arif et al., 2024). The thumbnail gets ``min(⌊α·T⌋, N)`` of the image's budget
    ``T`` (what the crops cannot hold goes back to it); the crops share the rest in proportion to
    how many of the thumbnail's top ``⌊N·(1−α)⌋`` tokens by layer-``early_layer`` [CLS] attention
    fall in each crop's share (``regions``: ``release`` — HiRED's code, bands of rows —, or
    ``spatial`` — the crop's region of the thumbnail). Every view keeps its top tokens by
    layer-``score_layer`` [CLS] attention (post-softmax, head mean). No merging."""

    name: ClassVar[str] = "hired"
    alpha: float = 0.5
    score_layer: int = -2
    early_layer: int = 0
    regions: str = "release"

    def __post_init__(self):
        super().__post_init__()
        if not (math.isfinite(self.alpha) and 0.0 <= self.alpha <= 1.0):
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")
        _check_choice(self.regions, P.REGIONS, "regions")

    def score_request(self):
        return ScoreRequest("cls_softmax", self.score_layer, extra_layers=(self.early_layer,))

    def split(self, layout: AnyResLayout) -> tuple[int, int]:
        """``(thumbnail, crops)`` token counts, summing to ``T``."""
        total = sum(self.shares(layout))
        thumb = min(math.floor(total * self.alpha), layout.tokens_per_view)
        crops = min(total - thumb, layout.canvas_tokens)
        return total - crops, crops

    def select(self, layout, scores, views):
        sig = self.require_tower_scores(scores)
        s = sig.scores.float()
        N, device = layout.tokens_per_view, s.device
        thumb_k, crops_k = self.split(layout)
        thumb_keep = Fn.topk_mask(s[0], thumb_k)
        if layout.n_crops == 0:
            return Selection(thumb_keep, s.new_zeros(0, N, dtype=torch.bool))
        guide = Fn.topk_mask(sig.extra[0, 0].float(), Fn.floor_count(N, 1.0 - self.alpha))  # [N]
        n_valid = Fn.crop_token_counts(layout, device)
        k = P.apportion(crops_k, P.region_counts(guide, layout, self.regions), n_valid, N)
        ranking = s[1:].masked_fill(~Fn.crop_valid_mask(layout, device), Fn.NEG_INF)
        return Selection(thumb_keep, Fn.topk_mask(ranking, k, N))


@register_compressor
@dataclass(frozen=True)
class PruMerge(VisionStagePeer):
    """PruMerge (Shang et al., 2024). Scores: the [CLS] row's attention at layer ``score_layer``
    with all heads as one (``softmax(q·k/√C)``). A view's outliers are its tokens above
    ``Q3 + 1.5·IQR``; ``budget="adaptive"`` keeps them (PruMerge's own count), ``"exact"`` shares
    the image's budget ``T`` among the views in proportion to their outlier counts and keeps each
    view's top tokens. Every kept token then gathers its ``neighbours`` most key-similar tokens
    (that layer's keys, all heads), weighted by their scores (``merge``: ``release``
    ``x + Σ a·x_c``, ``mean``, ``none``)."""

    name: ClassVar[str] = "prumerge"
    budget: str = "exact"
    neighbours: int = 32
    merge: str = "release"
    score_layer: int = -1

    def __post_init__(self):
        super().__post_init__()
        _check_choice(self.budget, BUDGETS, "budget")
        _check_choice(self.merge, P.MERGES, "merge")
        if not (isinstance(self.neighbours, int) and self.neighbours >= 1):
            raise ValueError(f"neighbours must be an integer >= 1, got {self.neighbours!r}")

    def score_request(self):
        return ScoreRequest("cls_softmax_onehead", self.score_layer, keys="concat")

    def token_count(self, layout: AnyResLayout) -> int | None:
        return None if self.budget == "adaptive" else super().token_count(layout)

    def adaptive_keep(self, outliers: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return outliers

    def exact_keep(self, ranking: torch.Tensor, k: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return Fn.topk_mask(ranking, k, ranking.shape[1])

    def select(self, layout, scores, views):
        sig = self.require_tower_scores(scores)
        s = sig.scores.float()
        valid = self.view_valid(layout, s.device)
        outliers = P.iqr_outliers(s, valid)
        if self.budget == "adaptive":
            keep = self.adaptive_keep(outliers, valid)
        else:
            caps = valid.sum(1)
            k = P.apportion(sum(self.shares(layout)), outliers.sum(1), caps, layout.tokens_per_view)
            keep = self.exact_keep(s.masked_fill(~valid, Fn.NEG_INF), k, valid)
        merged = P.neighbour_merge(views, sig.keys, keep, valid, s, self.neighbours, self.merge)
        return Selection(keep[0], keep[1:], views=None if self.merge == "none" else merged)


@register_compressor
@dataclass(frozen=True)
class PruMergePlus(PruMerge):
    """PruMerge+: PruMerge plus spatially uniform samples. ``budget="adaptive"``: the outliers and
    every ``s``-th position of the view (``s = ⌊⌊N_v/o⌋/3⌋``, ``o`` outliers; positions below
    ``N − 1``), as PruMerge+'s code; ``"exact"``: of a view's share ``k``, ``⌊k·spatial_share⌉``
    evenly spaced samples among the tokens left after its top ``k − that`` by score."""

    name: ClassVar[str] = "prumerge_plus"
    spatial_share: float = 0.75

    def __post_init__(self):
        super().__post_init__()
        if not (math.isfinite(self.spatial_share) and 0.0 <= self.spatial_share <= 1.0):
            raise ValueError(f"spatial_share must be in [0, 1], got {self.spatial_share!r}")

    def adaptive_keep(self, outliers, valid):
        o = outliers.sum(1)
        stride = ((valid.sum(1) // o.clamp_min(1)) // 3).clamp_min(1)
        samples = P.stride_picks(valid & ~outliers, stride, valid.shape[1] - 1) & (o > 0)[:, None]
        return outliers | samples

    def exact_keep(self, ranking, k, valid):
        m = P.round_share(k, self.spatial_share)
        top = Fn.topk_mask(ranking, k - m, ranking.shape[1])
        return top | P.spaced_picks(valid & ~top, m)
