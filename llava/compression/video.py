"""GlobalCom² for video — the global video representation commands the frames — and the
rules of its peers, as pure tensor functions.

Notation: a video gives ``F`` frames of ``N`` tokens each, ``x`` ``[F, N, D]`` — the tokens
the LLM sees (LLaVA-OneVision: every frame's 14×14 pooled, projected tokens; Qwen2-VL: every
temporal patch's merged tokens). ``R`` is the base retention ratio.

GlobalCom² (the paper's video extension):

1. ``g`` = the mean of all ``F·N`` tokens (the global video representation);
2. token score ``s_{f,i} = −cos(x_{f,i}, g)`` (:func:`global_scores`), pooled per frame
   (:func:`frame_scores`: sum, or max; or the count of the video's top tokens in the frame,
   :func:`top_counts`);
3. frame budgets with the image method's rule (:func:`~.functional.softmax_budgets`):
   ``σ = softmax((s − max s)/τ)``, ``r_f = min(1, R·(1 + σ_f − 1/F))``, frame f keeps ``⌊N·r_f⌋``;
4. inside a frame, ``α·ŝ^G + (1−α)·ŝ^L`` (:func:`~.functional.combine_scores`), global term
   ``−cos(x, g)``, local term the frame's own score (``−cos(x, mean of frame f)`` by default);
5. kept tokens in frame order, raster order inside a frame, a trailing newline kept
   (:func:`pack_video`).

VidCom2 (the authors' sibling method; :func:`vidcom2_similarities`, :func:`vidcom2_budgets`,
:func:`vidcom2_counts`) and EVS (:func:`evs_dissimilarity`, :func:`evs_token_count`) are stated
where they are used. Everything is batched over frames: no loops over frames or tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .functional import PackPlan, _descending_rank, _wide
from .layout import VideoLayout

# ----------------------------------------------------------------------------- GlobalCom²


def global_scores(x: torch.Tensor) -> torch.Tensor:
    """``s^G_{f,i} = −cos(x_{f,i}, g)`` with ``g`` the mean of every token of every frame:
    ``[F, N, D]`` → ``[F, N]`` float32."""
    x = x.float()
    g = x.reshape(-1, x.shape[-1]).mean(dim=0)
    return -F.cosine_similarity(x, g.expand_as(x), dim=-1)


def frame_scores(token_scores: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """``s_f``: token scores ``[F, N]`` pooled over each frame (``sum`` as the crop regions of
    the image method, or ``max``) → ``[F]`` float64 (float32 on MPS)."""
    s = token_scores.to(_wide(token_scores.device))
    if reduce == "sum":
        return s.sum(dim=1)
    if reduce == "max":
        return s.amax(dim=1)
    raise ValueError(f"unknown frame reduction {reduce!r}; valid: sum, max")


def top_counts(token_scores: torch.Tensor, k: int) -> torch.Tensor:
    """How many of the video's ``k`` best tokens (by ``token_scores`` ``[F, N]``, across all
    frames) fall in each frame → ``[F]`` float64 (the count-based budget variant)."""
    flat = token_scores.reshape(-1)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        keep[flat.topk(min(k, flat.numel())).indices] = True
    return keep.reshape(token_scores.shape).sum(dim=1).to(_wide(flat.device))


# ----------------------------------------------------------------------------- packing


def pack_video(layout: VideoLayout, keep: torch.Tensor) -> PackPlan:
    """Lay out the kept tokens ``keep`` ``[F, N]`` (bool) of one video: frame by frame, raster
    order inside a frame, then the trailing newline if the layout has one (always kept).

    ``index`` points into ``frames.reshape(F·N, D)``, the value ``F·N`` marking the newline;
    since the packed sequence is a subsequence of the host's uncompressed run, ``kept`` equals
    ``index``. One host sync (the data-dependent length)."""
    if tuple(keep.shape) != (layout.frames, layout.tokens_per_frame):
        raise ValueError(f"a selection of shape {tuple(keep.shape)} for a video of "
                         f"{layout.frames} frames × {layout.tokens_per_frame} tokens")
    nl = int(layout.newline)
    sel = torch.cat([keep.reshape(-1), keep.new_ones(nl)])
    pick = sel.nonzero().squeeze(1)  # the one host sync: the length is data-dependent
    newline_pos = torch.full((nl,), pick.shape[0] - 1, dtype=torch.long, device=keep.device)
    return PackPlan(pick, newline_pos, pick)


def keep_all_frames(layout: VideoLayout, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[F, N]`` all true."""
    return torch.ones(layout.frames, layout.tokens_per_frame, dtype=torch.bool, device=torch.device(device))


def keep_top_total(scores: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` highest of ``scores`` ``[F, N]`` across the whole video (ties to the lower
    index, as a stable descending sort) → ``[F, N]`` bool."""
    rank = _descending_rank(scores.reshape(-1))
    return (rank < count).reshape(scores.shape)


# ----------------------------------------------------------------------------- VidCom2


def vidcom2_similarities(
    x: torch.Tensor, channel_ratio: float = 0.5, bandwidths: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """VidCom2's token scores: how *similar* each token is to the video and to its frame.

    Of the ``D`` channels the ``⌊D·channel_ratio⌋`` with the lowest variance over the video's
    tokens are kept; tokens are L2-normalised on them; the video centre is the mean of all
    tokens, the frame centre the mean of the frame's; similarity to a centre ``c`` is the
    multi-scale Gaussian kernel ``Σ_a exp(−‖x − c‖² / 2a)`` over ``bandwidths``.
    ``[F, N, D]`` → ``(video [F, N], frame [F, N])`` float32. Low = distinctive = kept."""
    Fr, N, D = x.shape
    flat = x.float().reshape(Fr * N, D)
    k = int(D * channel_ratio)
    channels = flat.var(dim=0, unbiased=False).topk(k, largest=False).indices
    z = F.normalize(flat[:, channels], dim=-1).reshape(Fr, N, k)
    video_centre = z.mean(dim=(0, 1), keepdim=True)  # [1, 1, k]
    frame_centre = z.mean(dim=1, keepdim=True)  # [F, 1, k]

    def kernel(centre: torch.Tensor) -> torch.Tensor:
        d2 = (z - centre).pow(2).sum(dim=-1)  # [F, N]
        return sum(torch.exp(-d2 / (2 * a)) for a in bandwidths)

    return kernel(video_centre), kernel(frame_centre)


def vidcom2_budgets(video_similarity: torch.Tensor, ratio: float, temperature: float = 0.01) -> torch.Tensor:
    """VidCom2's frame budgets: frame score ``s_f = −mean_i sim(x_{f,i}, video)``,
    ``p = softmax((s − max s)/τ)`` (no ``1e-8``), ``r_f = min(1, R·(1 + p_f − mean p))`` → ``[F]``
    float32."""
    s = -video_similarity.float().mean(dim=1)
    p = torch.softmax((s - s.max()) / temperature, dim=0)
    return (ratio * (1 + p - p.mean())).clamp(max=1.0)


def vidcom2_counts(budgets: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """``k_f = max(1, round(r_f·N))`` (round half to even, as ``torch.round``) → ``[F]`` int64."""
    return (budgets * tokens_per_frame).round().long().clamp(min=1)


# ----------------------------------------------------------------------------- EVS


def evs_dissimilarity(x: torch.Tensor, first_frame: float = 255.0) -> torch.Tensor:
    """EVS: ``1 − cos(x_{f,i}, x_{f−1,i})`` (each token against the same cell of the previous
    frame), ``first_frame`` for every token of frame 0 (so it is always kept): ``[F, N, D]`` →
    ``[F, N]`` float32."""
    x = x.float()
    change = 1.0 - F.cosine_similarity(x[1:], x[:-1], dim=-1)  # [F-1, N]
    return torch.cat([change.new_full((1, x.shape[1]), first_frame), change])


def evs_token_count(layout: VideoLayout, ratio: float) -> int:
    """EVS keeps ``max(N, ⌊F·N·R⌋)`` frame tokens (never less than one frame's worth)."""
    return max(layout.tokens_per_frame, int(math.floor(layout.frame_tokens * ratio)))


__all__ = [
    "evs_dissimilarity", "evs_token_count", "frame_scores", "global_scores", "keep_all_frames",
    "keep_top_total", "pack_video", "top_counts", "vidcom2_budgets", "vidcom2_counts", "vidcom2_similarities",
]
