"""What a compression method asks of the vision tower and what it returns: the score request,
the selection, and the per-image record (with what an in-LLM method did to it later)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from .functional import AnyResLayout
from .layout import VideoLayout


class ScoreRequest(NamedTuple):
    """Which token scores a method needs from the vision tower. With ``keys`` or
    ``extra_layers`` the tower hands back a :class:`~llava.compression.scoring.TowerScores`
    instead of the ``[V, N]`` scores alone."""

    kind: str  # cls_logits | cls_softmax | cls_softmax_onehead | neg_cos | attn_received
    layer: int  # encoder layer whose attention is used (ignored for neg_cos)
    keys: str | None = None  # also that layer's patch keys: head_mean [V, N, d] | concat [V, N, C]
    extra_layers: tuple[int, ...] = ()  # also the same score at these layers


@dataclass
class Selection:
    """What one image keeps. ``thumb_keep`` ``[N]``, ``crop_keep`` ``[n, N]`` (bool, true
    grid positions); ``budgets`` ``[n]`` per-crop ratios r_j; ``thumb_order`` the kept
    thumbnail indices by descending score (used by the ``reference`` layout); ``views``
    ``[V, N, C]`` the features to pack when a method merges tokens (a kept token's row holds
    its merged feature; ``None``: the input views).

    What one video keeps: ``crop_keep`` ``[F, N]`` holds the frames' masks (also as
    :attr:`frame_keep`), ``budgets`` ``[F]`` the per-frame ratios r_f, ``thumb_keep`` is empty."""

    thumb_keep: torch.Tensor
    crop_keep: torch.Tensor
    budgets: torch.Tensor | None = None
    thumb_order: torch.Tensor | None = None
    views: torch.Tensor | None = None

    @property
    def frame_keep(self) -> torch.Tensor:
        """A video's per-frame masks ``[F, N]`` (the same tensor as ``crop_keep``)."""
        return self.crop_keep


@dataclass
class LLMRecord:
    """What an in-LLM method did to one image's tokens during the prefill.

    ``stages``: ``(score_layer, drop_layer)`` per drop; ``tokens_per_layer[l]``: this image's
    visual tokens in decoder layer ``l``; ``sequence_tokens_per_layer[l]``: the whole prompt row
    (text + every image) in layer ``l`` — what the layer's FLOPs scale with; ``kept``: the
    positions, in the image's packed sequence (indices into :attr:`CompressedImage.index`),
    of the tokens that reach the last layer (a recycled SparseVLM token counts at its
    cluster centre's position)."""

    method: str
    stages: list[tuple[int, int]]
    tokens_per_layer: list[int]
    sequence_tokens_per_layer: list[int]
    kept: torch.Tensor

    def info(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "drop_layers": [d for _, d in self.stages],
            "score_layers": [s for s, _ in self.stages],
            "tokens_per_layer": list(self.tokens_per_layer),
            "sequence_tokens_per_layer": list(self.sequence_tokens_per_layer),
            "tokens_last_layer": int(self.tokens_per_layer[-1]) if self.tokens_per_layer else 0,
        }


@dataclass
class CompressedImage:
    """What one image (or one video: ``layout`` is then a :class:`VideoLayout`) became. ``kept`` ``[T]``: the position of every packed token in the
    host's *uncompressed* placeholder run for this image (sequence order) — so the compressed
    sequence equals the full one with everything else masked out; ``None`` for the
    ``reference`` layout, whose sequence is not a subsequence of the host's."""

    tokens: torch.Tensor | None  # [T, D] (None in the records kept on the model)
    index: torch.Tensor  # [T] into views.reshape(V·N, D); V·N = newline
    selection: Selection
    layout: AnyResLayout | VideoLayout
    kept: torch.Tensor | None = None  # [T] positions in the uncompressed run
    #: set after the prefill when an in-LLM method pruned this image's tokens
    llm: LLMRecord | None = None

    @property
    def is_video(self) -> bool:
        return isinstance(self.layout, VideoLayout)

    def info(self) -> dict[str, Any]:
        """Host-side summary (token counts, budgets) — syncs, so call it outside hot loops.
        A video's: ``frames``, ``frame_shape``, ``frame_kept`` and, when the method allocates
        them, the per-frame ``budgets`` r_f."""
        sel = self.selection
        full = self.layout.num_tokens()
        if self.is_video:
            out = {
                "tokens": int(self.index.shape[0]),
                "tokens_uncompressed": full,
                "frames": self.layout.frames,
                "frame_shape": list(self.layout.view_shape),
                "frame_kept": sel.crop_keep.sum(dim=1).tolist(),
            }
            if sel.budgets is not None:
                out["budgets"] = [round(float(b), 6) for b in sel.budgets.tolist()]
            return out
        out = {
            "tokens": int(self.index.shape[0]),
            "tokens_uncompressed": full,
            "thumbnail_kept": int(sel.thumb_keep.sum()),
            "crop_kept": sel.crop_keep.sum(dim=1).tolist(),
            "grid": [self.layout.grid_w, self.layout.grid_h],
        }
        if self.layout.n_crops:
            out["canvas"] = list(self.layout.visible_shape)
        else:
            out["view"] = list(self.layout.view_shape)
        if sel.budgets is not None:
            out["budgets"] = [round(float(b), 6) for b in sel.budgets.tolist()]
        if self.llm is not None:
            out["llm"] = self.llm.info()
        return out


def video_selection(keep: torch.Tensor, budgets: torch.Tensor | None = None) -> Selection:
    """A video's :class:`Selection`: frame masks ``[F, N]``, no thumbnail."""
    return Selection(keep.new_zeros(0), keep, budgets=budgets)


__all__ = ["CompressedImage", "LLMRecord", "ScoreRequest", "Selection", "video_selection"]
