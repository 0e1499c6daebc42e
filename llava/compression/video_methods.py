"""Video-only peers of GlobalCom² on the same interface: VidCom2 (the authors' sibling method)
and EVS (temporal redundancy). Both leave images whole, as their own code does (they compress
the video branch only); GlobalCom², FasterVLM and ``uniform_random`` handle videos themselves
(:meth:`~.methods.Compressor.select_video`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from . import functional as Fn
from . import video as Vd
from .layout import VideoLayout
from .methods import (
    Compressor,
    NoCompression,
    TopKCompressor,
    _check_ratio,
    register_compressor,
)
from .records import Selection, video_selection


class _ImagesWhole:
    """Mixin: images pass through uncompressed (the method is defined on videos only)."""

    def select(self, layout, scores, views) -> Selection:
        return NoCompression.select(self, layout, scores, views)

    def check_geometry(self, tokens_per_view: int) -> None:
        """Nothing to refuse: no count rounds to zero (see the video rules)."""


@register_compressor
@dataclass(frozen=True)
class VidCom2(_ImagesWhole, TopKCompressor):
    """VidCom2 (Liu et al., EMNLP 2025; ``token_compressor/vidcom2`` of its release), number for
    number on the tokens the LLM sees:

    1. keep the half of the channels with the lowest variance over the video, L2-normalise;
    2. similarity of every token to the video centre and to its frame centre, each a
       multi-scale Gaussian kernel (:func:`~.video.vidcom2_similarities`);
    3. frame budgets ``r_f = min(1, R·(1 + p_f − mean p))``, ``p = softmax((s − max s)/τ)`` with
       ``s_f = −mean_i sim(x_{f,i}, video)`` and τ = 0.01; frame f keeps ``max(1, round(N·r_f))``;
    4. inside a frame, the tokens with the lowest ``sim(video) + sim(frame)``, in raster order.

    ``budget="exact"``: ``⌊R·F·N⌋`` in all, reconciled across frames by the same ranking.
    """

    name: ClassVar[str] = "vidcom2"
    reports_budgets: ClassVar[bool] = True
    temperature: float = 0.01

    def __post_init__(self):
        super().__post_init__()
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")

    def token_count(self, layout) -> int | None:
        if not isinstance(layout, VideoLayout):
            return layout.num_tokens()
        return super().token_count(layout)

    def video_token_count(self, layout: VideoLayout) -> int | None:
        return None

    def select_video(self, layout, scores, frames):
        video_sim, frame_sim = Vd.vidcom2_similarities(frames)  # [F, N] each
        r = Vd.vidcom2_budgets(video_sim, self.retention_ratio, self.temperature)
        k = Vd.vidcom2_counts(r, layout.tokens_per_frame)
        ranking = -(video_sim + frame_sim)  # the least similar first
        keep = Fn.topk_mask(ranking, k, math.ceil(layout.tokens_per_frame * min(1.0, 2 * self.retention_ratio)))
        return video_selection(self._exact_video(keep, ranking, layout), r)


@register_compressor
@dataclass(frozen=True)
class EVS(_ImagesWhole, Compressor):
    """EVS, Efficient Video Sampling (temporal redundancy; the rule of vLLM's ``evs`` module):
    each token scores ``1 − cos`` to the same cell of the previous frame, the first frame is kept
    whole, and the video keeps its ``max(N, ⌊F·N·R⌋)`` most changed tokens (ties to the earlier
    token) — a count fixed by the shape, so it needs no ``budget`` option."""

    name: ClassVar[str] = "evs"
    retention_ratio: float = 0.25

    def __post_init__(self):
        super().__post_init__()
        _check_ratio(self.retention_ratio)

    def token_count(self, layout) -> int | None:
        if not isinstance(layout, VideoLayout):
            return layout.num_tokens()
        return Vd.evs_token_count(layout, self.retention_ratio) + int(layout.newline)

    def select_video(self, layout, scores, frames) -> Selection:
        change = Vd.evs_dissimilarity(frames)  # [F, N]
        return video_selection(Vd.keep_top_total(change, Vd.evs_token_count(layout, self.retention_ratio)))


__all__ = ["EVS", "VidCom2"]
