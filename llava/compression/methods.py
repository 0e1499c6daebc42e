"""Compression methods: small frozen configs behind one registry.

Every method follows one template (:meth:`Compressor.compress`): ``select`` decides which
thumbnail and crop tokens to keep, ``pack_plan`` lays them out, ``gather_tokens`` copies (and
projects) them. Top-k methods share :class:`TopKCompressor`, so a new one is usually a
``token_scores``, ``budgets`` or ``crop_scores`` override. Methods defined elsewhere join the
registry with :func:`register_compressor` (the vision-stage peers: :mod:`.peers`). What a method
asks for and returns (:class:`ScoreRequest`, :class:`Selection`, :class:`CompressedImage`) is in
:mod:`.records`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from . import functional as Fn
from . import video as Vd
from .functional import AnyResLayout
from .layout import VideoLayout
from .records import CompressedImage, ScoreRequest, Selection, video_selection
from .scoring import SCORE_KINDS, TowerScores

CROP_ORDERS = ("forward", "reverse")


def _check_ratio(r: float, name: str = "retention_ratio") -> None:
    if not (isinstance(r, (int, float)) and math.isfinite(r) and 0.0 < r <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {r!r}")


def _check_choice(value: str, valid: tuple[str, ...], name: str) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)}; got {value!r}")


class NonFiniteScoresError(ValueError):
    """Token scores with NaN or inf (e.g. an fp16 overflow in the vision tower)."""


def _finite_flag(scores: torch.Tensor | TowerScores) -> torch.Tensor:
    """Whether ``scores`` are all finite, copied to the host without waiting: it is read only
    after the selection, whose data-dependent length synchronises the device anyway (no
    extra sync, and no device-side assert that would poison a CUDA context)."""
    if isinstance(scores, TowerScores):
        flags = torch.stack([torch.isfinite(t).all() for t in scores if t is not None])
        return flags.all().to("cpu", non_blocking=True)
    return torch.isfinite(scores).all().to("cpu", non_blocking=True)


@dataclass(frozen=True)
class Compressor:
    """Base template. Subclasses set ``name`` and implement :meth:`select`."""

    name: ClassVar[str] = ""
    layout: str = "faithful"
    #: ``forward`` (the host's order) or ``reverse``: the crops enter the sequence in reverse
    #: raster order (a pure re-packing of the same tokens, for the positional-bias study).
    crop_order: str = "forward"

    def __post_init__(self):
        _check_choice(self.layout, ("faithful", "reference"), "layout")
        _check_choice(self.crop_order, CROP_ORDERS, "crop_order")

    def score_request(self) -> ScoreRequest | None:
        return None

    def check_geometry(self, tokens_per_view: int) -> None:
        """Refuse, before any work, a configuration that cannot run on views of
        ``tokens_per_view`` tokens (called when the compressor is attached to a model)."""

    def select(self, layout: AnyResLayout, scores: torch.Tensor | None, views: torch.Tensor) -> Selection:
        raise NotImplementedError

    def select_video(self, layout: VideoLayout, scores: torch.Tensor | None, frames: torch.Tensor) -> Selection:
        """Which tokens of a video to keep: ``frames`` ``[F, N, D]`` (the tokens the LLM sees),
        ``scores`` ``[F, N]`` as asked for by :meth:`score_request` → a :class:`Selection`
        with ``crop_keep`` ``[F, N]`` (and per-frame ``budgets`` when the method allocates them)."""
        raise NotImplementedError(f"{self.name} does not compress videos")

    @classmethod
    def handles_video(cls) -> bool:
        """Whether the method compresses videos (it implements :meth:`select_video`)."""
        return cls.select_video is not Compressor.select_video

    def newline_policy(self) -> str:
        """Which canvas rows end in a newline: ``kept`` (rows still holding a kept token,
        vanilla) or ``all`` (a count fixed by the image size)."""
        return "kept"

    def token_count(self, layout: AnyResLayout) -> int | None:
        """The packed length for ``layout`` when it depends on the image size alone (so a
        processor can size the placeholders before the vision tower runs), else ``None``."""
        return layout.num_tokens()

    def compress(
        self,
        views: torch.Tensor,
        newline: torch.Tensor,
        layout: AnyResLayout,
        scores: torch.Tensor | None = None,
        project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> CompressedImage:
        """``views`` ``[V, N, C]`` (thumbnail first) → packed tokens ``[T, D]``.

        ``scores`` ``[V, N]`` as asked for by :meth:`score_request` (a :class:`TowerScores` when
        it asks for keys or extra layers). ``project`` (a per-token map, e.g. the
        vision→language projector) is applied to the kept tokens only — after any merging —
        so ``views`` may be the vision tower's features; without it ``C == D``.

        A video: ``layout`` a :class:`VideoLayout`, ``views`` its frames ``[F, N, C]``,
        ``scores`` ``[F, N]``, ``newline`` the token closing the video (``None`` if it has none);
        see :meth:`select_video`."""
        if isinstance(layout, VideoLayout):
            return self._compress_video(views, newline, layout, scores, project)
        if views.shape[0] != layout.n_views or views.shape[1] != layout.tokens_per_view:
            raise ValueError(
                f"got {tuple(views.shape[:2])} views×tokens, the image layout needs "
                f"({layout.n_views}, {layout.tokens_per_view})"
            )
        finite = _finite_flag(scores) if scores is not None else None
        sel = self.select(layout, scores, views)
        plan = Fn.pack_plan(
            layout, sel.thumb_keep, sel.crop_keep, self.layout, sel.thumb_order, self.newline_policy(), self.crop_order
        )
        if finite is not None and not bool(finite):  # pack has synchronised: no extra wait
            dtype = scores.scores.dtype if isinstance(scores, TowerScores) else scores.dtype
            raise NonFiniteScoresError(
                f"{self.name}: the vision tower's token scores contain NaN or inf "
                f"(scores dtype {dtype}); the image cannot be compressed"
            )
        source = views if sel.views is None else sel.views
        tokens = Fn.gather_tokens(source, newline, plan.index, plan.newline_pos, project)
        if sel.views is not None:  # records keep the selection, not a copy of the features
            sel = dataclasses.replace(sel, views=None)
        return CompressedImage(tokens, plan.index, sel, layout, plan.kept)

    def _compress_video(
        self,
        frames: torch.Tensor,
        newline: torch.Tensor | None,
        layout: VideoLayout,
        scores: torch.Tensor | None,
        project: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> CompressedImage:
        if frames.dim() != 3 or tuple(frames.shape[:2]) != (layout.frames, layout.tokens_per_frame):
            raise ValueError(
                f"got frames of shape {tuple(frames.shape)}, the video layout needs "
                f"({layout.frames}, {layout.tokens_per_frame}, D)"
            )
        finite = _finite_flag(scores) if scores is not None else None
        sel = self.select_video(layout, scores, frames)
        plan = Vd.pack_video(layout, sel.crop_keep)
        if finite is not None and not bool(finite):  # pack has synchronised: no extra wait
            raise NonFiniteScoresError(
                f"{self.name}: the vision tower's token scores contain NaN or inf "
                f"(scores dtype {scores.dtype}); the video cannot be compressed"
            )
        if newline is None:
            if layout.newline:
                raise ValueError("the video layout ends in a newline token but no newline was given")
            newline = frames.new_zeros(frames.shape[-1])  # never written: no newline slot
        tokens = Fn.gather_tokens(frames, newline, plan.index, plan.newline_pos, project)
        return CompressedImage(tokens, plan.index, sel, layout, plan.kept)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class NoCompression(Compressor):
    """Keep every token: exactly LLaVA-NeXT's own packing."""

    name: ClassVar[str] = "none"

    def select(self, layout, scores, views):
        thumb, crops = Fn.keep_all(layout, views.device)
        return Selection(thumb, crops)

    def select_video(self, layout, scores, frames):
        return video_selection(Vd.keep_all_frames(layout, frames.device))


BUDGETS = ("adaptive", "exact")


@dataclass(frozen=True)
class TopKCompressor(Compressor):
    """Template for methods that keep top-scored tokens: the thumbnail keeps its top
    ``⌊N·R⌋``; crop ``j`` keeps its top ``⌊N_j·r_j⌋`` unpadded tokens. Subclasses choose the
    scores (:meth:`token_scores`, :meth:`crop_scores`) and the budgets (:meth:`budgets`,
    bounded by :meth:`max_budget`); by default every crop gets ``r_j = R`` and ranks its
    tokens by its own score.

    ``budget="exact"`` fixes the packed length as a function of the image size: the crops
    keep ``⌊R·ΣN_j⌋`` tokens in total — the per-crop counts above, reconciled to that total
    by the ranking scores across crops — and every canvas row keeps its newline."""

    retention_ratio: float = 0.25
    budget: str = "adaptive"
    #: Whether the per-crop budgets are worth reporting (adaptive) or just R everywhere.
    reports_budgets: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        _check_ratio(self.retention_ratio)
        _check_choice(self.budget, BUDGETS, "budget")

    def newline_policy(self) -> str:
        return "all" if self.budget == "exact" else "kept"

    def token_count(self, layout: AnyResLayout | VideoLayout) -> int | None:
        if isinstance(layout, VideoLayout):
            if self.budget == "exact":
                return Fn.floor_count(layout.frame_tokens, self.retention_ratio) + int(layout.newline)
            return self.video_token_count(layout)
        thumb = Fn.floor_count(layout.tokens_per_view, self.retention_ratio)
        if layout.n_crops == 0:
            return thumb + int(layout.newline)
        if self.budget != "exact":
            return None
        rows = layout.grid_h * layout.side if self.layout == "reference" else layout.visible_shape[0]
        return thumb + Fn.floor_count(layout.canvas_tokens, self.retention_ratio) + rows * int(layout.newline)

    def video_token_count(self, layout: VideoLayout) -> int | None:
        """The packed length of a video under ``budget="adaptive"`` when it depends on the
        shape alone: ``⌊N·R⌋`` in every frame, plus the newline."""
        return layout.frames * Fn.floor_count(layout.tokens_per_frame, self.retention_ratio) + int(layout.newline)

    def check_geometry(self, tokens_per_view: int) -> None:
        if Fn.floor_count(tokens_per_view, self.retention_ratio) == 0:
            raise ValueError(
                f"retention_ratio {self.retention_ratio!r} keeps no token of a {tokens_per_view}-token view "
                f"(floor({tokens_per_view}·R) = 0); the minimum is 1/{tokens_per_view} = {1 / tokens_per_view:.6g}"
            )

    def token_scores(self, scores: torch.Tensor | None, views: torch.Tensor) -> torch.Tensor:
        """``[V, N]`` float32 scores of every view's tokens."""
        if scores is None:
            raise ValueError(f"{self.name} needs vision-tower scores; run it through the model")
        return scores.float()

    def budgets(self, layout: AnyResLayout, thumb: torch.Tensor, thumb_keep: torch.Tensor) -> torch.Tensor:
        """Per-crop retention ratios ``r_j`` ``[n]`` (float64)."""
        return torch.full((layout.n_crops,), float(self.retention_ratio), dtype=torch.float64, device=thumb.device)

    def max_budget(self) -> float:
        """A host-side bound on every ``r_j`` (so no sync is needed to size the top-k)."""
        return self.retention_ratio

    def crop_scores(self, layout: AnyResLayout, s: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``[n, N]`` ranking scores of the crop tokens, ``-inf`` on the letterbox."""
        return s[1:].masked_fill(~valid, Fn.NEG_INF)

    def select(self, layout, scores, views):
        s = self.token_scores(scores, views)  # [V, N]
        thumb, device = s[0], s.device
        k_thumb = Fn.floor_count(layout.tokens_per_view, self.retention_ratio)
        thumb_keep, order = Fn.thumbnail_topk(thumb, k_thumb, ordered=self.layout == "reference")
        if layout.n_crops == 0:
            return Selection(thumb_keep, s.new_zeros(0, s.shape[1], dtype=torch.bool), thumb_order=order)
        r = self.budgets(layout, thumb, thumb_keep)
        k = Fn.budget_counts(r, Fn.crop_token_counts(layout, device))
        k_max = math.ceil(layout.tokens_per_view * self.max_budget())
        ranking = self.crop_scores(layout, s, Fn.crop_valid_mask(layout, device))
        crop_keep = Fn.topk_mask(ranking, k, k_max)  # letterbox tokens are -inf and k_j ≤ N_j
        if self.budget == "exact":
            crop_keep = Fn.reconcile_total(crop_keep, ranking, Fn.floor_count(layout.canvas_tokens, self.retention_ratio))
        return Selection(thumb_keep, crop_keep, budgets=r if self.reports_budgets else None, thumb_order=order)

    def select_video(self, layout, scores, frames):
        """Every frame keeps its top ``⌊N·R⌋`` tokens by its own score (``budget="exact"``:
        ``⌊R·F·N⌋`` in all, reconciled by the scores across frames)."""
        s = self.token_scores(scores, frames)  # [F, N]
        keep = Fn.topk_mask(s, Fn.floor_count(layout.tokens_per_frame, self.retention_ratio))
        return video_selection(self._exact_video(keep, s, layout))

    def _exact_video(self, keep: torch.Tensor, ranking: torch.Tensor, layout: VideoLayout) -> torch.Tensor:
        if self.budget != "exact":
            return keep
        return Fn.reconcile_total(keep, ranking, Fn.floor_count(layout.frame_tokens, self.retention_ratio))


@dataclass(frozen=True)
class FasterVLM(TopKCompressor):
    """FasterVLM: top-R of each view by its own [CLS] attention (post-softmax, penultimate
    layer, head mean), the same ratio in every view, kept in raster order."""

    name: ClassVar[str] = "fastervlm"
    score: str = "cls_softmax"
    score_layer: int = -2

    def __post_init__(self):
        super().__post_init__()
        _check_choice(self.score, SCORE_KINDS, "score")

    def score_request(self):
        return ScoreRequest(self.score, self.score_layer)


@dataclass(frozen=True)
class UniformRandom(TopKCompressor):
    """A sanity floor: every view keeps a random ``⌊N_v·R⌋`` of its tokens (seeded)."""

    name: ClassVar[str] = "uniform_random"
    seed: int = 0

    def token_scores(self, scores, views):
        gen = torch.Generator(device=views.device).manual_seed(self.seed)
        return torch.rand(views.shape[:2], generator=gen, device=views.device)


@dataclass(frozen=True)
class GlobalCom2(TopKCompressor):
    """GlobalCom²: the thumbnail commands the crops.

    1. thumbnail: keep its top ``⌊N·R⌋`` tokens by [CLS] score;
    2. crop budgets ``r_j`` from the thumbnail scores pooled over each crop's region
       (``allocation``: softmax_sum — the paper —, softmax_max, ntopk, uniform);
    3. crop j keeps its top ``⌊N_j·r_j⌋`` unpadded tokens by ``α·global + (1−α)·local``.
    """

    name: ClassVar[str] = "globalcom2"
    reports_budgets: ClassVar[bool] = True
    temperature: float = 10.0
    alpha: float = 0.5
    allocation: str = "softmax_sum"
    score: str = "cls_logits"
    score_layer: int = -1

    ALLOCATIONS: ClassVar[tuple[str, ...]] = ("softmax_sum", "softmax_max", "ntopk", "uniform")

    def __post_init__(self):
        super().__post_init__()
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if not (math.isfinite(self.alpha) and 0.0 <= self.alpha <= 1.0):
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")
        _check_choice(self.allocation, self.ALLOCATIONS, "allocation")
        _check_choice(self.score, SCORE_KINDS, "score")

    def score_request(self):
        return ScoreRequest(self.score, self.score_layer)

    def max_budget(self) -> float:
        """``σ_j − mean σ < 1`` bounds the softmax rules by ``2R``; n_top-k can reach 1."""
        if self.allocation == "uniform":
            return self.retention_ratio
        if self.allocation == "ntopk":
            return 1.0
        return min(1.0, 2.0 * self.retention_ratio)

    def budgets(self, layout: AnyResLayout, thumb: torch.Tensor, thumb_keep: torch.Tensor) -> torch.Tensor:
        R = self.retention_ratio
        if self.allocation == "uniform":
            return super().budgets(layout, thumb, thumb_keep)
        if self.allocation == "ntopk":
            counts = Fn.region_scores(thumb_keep.to(thumb.dtype), layout, "sum")
            return Fn.count_budgets(counts, R)
        reduce = "sum" if self.allocation == "softmax_sum" else "max"
        return Fn.softmax_budgets(Fn.region_scores(thumb, layout, reduce), R, self.temperature)

    def crop_scores(self, layout, s, valid):
        return Fn.combine_scores(Fn.global_score_map(s[0], layout), s[1:], valid, self.alpha)

    # ------------------------------------------------------------------ video: the global
    # video representation commands the frames (:mod:`.video`)

    def video_token_count(self, layout: VideoLayout) -> int | None:
        return super().video_token_count(layout) if self.allocation == "uniform" else None

    def frame_budgets(self, global_scores: torch.Tensor) -> torch.Tensor:
        """``r_f`` ``[F]`` (float64) from the global scores ``−cos(x_{f,i}, g)`` ``[F, N]``,
        pooled per frame as ``allocation`` says (the crop rule with frames for crops)."""
        R, n_frames = self.retention_ratio, global_scores.shape[0]
        if self.allocation == "uniform":
            return torch.full((n_frames,), float(R), dtype=torch.float64, device=global_scores.device)
        if self.allocation == "ntopk":
            return Fn.count_budgets(Vd.top_counts(global_scores, Fn.floor_count(global_scores.numel(), R)), R)
        reduce = "sum" if self.allocation == "softmax_sum" else "max"
        return Fn.softmax_budgets(Vd.frame_scores(global_scores, reduce), R, self.temperature)

    def select_video(self, layout, scores, frames):
        """Frame budgets ``r_f`` from the global video representation, then each frame's top
        ``⌊N·r_f⌋`` by ``α·ŝ^G + (1−α)·ŝ^L`` (global ``−cos(x, g)``, local the frame's own score)."""
        g = Vd.global_scores(frames)  # [F, N]
        local = self.token_scores(scores, frames)  # [F, N]
        r = self.frame_budgets(g)
        n = torch.full_like(r, layout.tokens_per_frame, dtype=torch.long)
        k = Fn.budget_counts(r, n)
        ranking = Fn.combine_scores(g, local, torch.ones_like(g, dtype=torch.bool), self.alpha)
        keep = Fn.topk_mask(ranking, k, math.ceil(layout.tokens_per_frame * self.max_budget()))
        return video_selection(self._exact_video(keep, ranking, layout), r)


COMPRESSORS: dict[str, type[Compressor]] = {
    cls.name: cls for cls in (NoCompression, GlobalCom2, FasterVLM, UniformRandom)
}


def register_compressor(cls: type[Compressor]) -> type[Compressor]:
    """Class decorator: add a method to :data:`COMPRESSORS` under its ``name``, so
    ``build_compressor(cls.name, ...)`` builds it (a name taken by another class is an error)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if COMPRESSORS.get(cls.name, cls) is not cls:
        raise ValueError(f"compression method {cls.name!r} is already registered ({COMPRESSORS[cls.name].__name__})")
    COMPRESSORS[cls.name] = cls
    return cls


def is_pipeline_name(name: str) -> bool:
    """Whether ``name`` names a pipeline ``VISION+LLM`` (:mod:`llava.compression.pipeline`)."""
    return isinstance(name, str) and "+" in name


def option_names(name: str) -> list[str]:
    if is_pipeline_name(name):  # a pipeline: vision stage + in-LLM stage
        from .pipeline import pipeline_option_names

        return pipeline_option_names(name)
    return [f.name for f in dataclasses.fields(COMPRESSORS[name])]


def build_compressor(name: str, **options: Any) -> Compressor:
    """``build_compressor("globalcom2", retention_ratio=0.1)``. Unknown names or options
    raise, listing the valid ones; ``None`` option values fall back to the defaults.
    ``"a+b"`` builds a pipeline of vision method ``a`` then in-LLM method ``b``
    (:mod:`llava.compression.pipeline`)."""
    if is_pipeline_name(name):
        from .pipeline import build_pipeline

        return build_pipeline(name, **options)
    if name not in COMPRESSORS:
        raise ValueError(f"unknown compression method {name!r}; valid: {', '.join(COMPRESSORS)}")
    valid = option_names(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"{name} does not take option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return COMPRESSORS[name](**{k: v for k, v in options.items() if v is not None})


