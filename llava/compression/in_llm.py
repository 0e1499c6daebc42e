"""Visual-token pruning inside the LLM's prefill: FastV, SparseVLM and PyramidDrop (PDrop).

These methods keep every visual token into the LLM and drop some of them *between decoder
layers*, ranked by the attention that chosen query tokens pay them at one layer. A method is a
schedule of :class:`LLMStage` s — "rank with the attention of layer ``score_layer``; layers
``drop_layer`` and deeper see only the survivors" — and a rule turning those attention rows
into a keep mask (:meth:`InLLMCompressor.keep`). Everything here is a pure tensor function on
a padded batch; the model plumbing (recomputing the attention rows from a layer's queries and
keys, re-packing the sequence, per-layer masks and the KV cache) lives in the decoder-stack runner
(:mod:`llava.model.pruned_stack`).

Shapes: ``B`` rows, ``L`` tokens in the current (already pruned) sequence, ``Q`` query rows.
Per row, ``visual`` marks the visual tokens still present and ``valid`` the real (non-pad)
tokens; ``n0`` is the row's visual count entering the LLM. Attention rows ``attn`` ``[B, Q, L]``
are head-averaged softmax probabilities (float32) of the query tokens over the keys they see.

The three peers, as their releases do it (REFERENCE §6; pkunlp-icler/FastV,
Gumpest/SparseVLMs as of Oct 2024, Cooperx521/PyramidDrop):

- **FastV**: the last prompt token's attention at layer ``K−1`` ranks the visual tokens; layers
  ``K…`` see the top ``round(R·n0)``.
- **SparseVLM**: text "raters" (the question tokens whose embeddings attend most to the image)
  rate the visual tokens at layers 2, 6, 15, 19 (each layer still sees every current token);
  the layer's output keeps ``min(⌊λ·rank(P) + β⌋, n_v − 1)`` visual tokens, ``P`` the raters ×
  visual attention (no drop when ``P`` has full column rank), and the best 30 % of the dropped
  tokens are clustered (DPC-kNN, one cluster per ten) and merged back ("recycling").
- **PDrop**: at layers 8, 16, 24 the last prompt token's attention at that layer keeps
  ``⌊n0·λ_s⌋`` visual tokens (λ = 0.5, 0.25, 0.125).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch

from . import functional as Fn
from .methods import Compressor, NoCompression, _check_ratio, register_compressor
from .records import Selection


class LLMStage(NamedTuple):
    """Rank with the attention of layer ``score_layer`` (recomputed from its input hidden
    state); layers ``drop_layer`` and deeper see the survivors only."""

    score_layer: int
    drop_layer: int


class TokenState(NamedTuple):
    """The current sequence as a method sees it (see the module docstring)."""

    visual: torch.Tensor  # [B, L] bool
    valid: torch.Tensor  # [B, L] bool
    n0: torch.Tensor  # [B] int64


# ----------------------------------------------------------------------------- pure rules


def descending_rank(scores: torch.Tensor) -> torch.Tensor:
    """Rank of every entry along the last dim (0 = largest; ties to the lower index)."""
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    ranks = torch.arange(scores.shape[-1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, ranks)


def keep_top_visual(scores: torch.Tensor, state: TokenState, k: torch.Tensor) -> torch.Tensor:
    """Keep every non-visual token and the ``k`` ``[B]`` best-scored visual tokens of each row
    (``scores`` ``[B, L]``; ties to the earlier token) → ``[B, L]`` bool (within ``valid``)."""
    s = scores.float().masked_fill(~state.visual, Fn.NEG_INF)
    chosen = state.visual & (descending_rank(s) < k[:, None])
    return state.valid & (~state.visual | chosen)


def round_half_even(x: torch.Tensor) -> torch.Tensor:
    """Python's ``round`` (halves to even) as int64 — what FastV's release applies to its count."""
    return torch.round(x).long()


def compact(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The ``True`` positions of each row of ``mask`` ``[B, L]``, left-aligned: ``(pos [B, M],
    valid [B, M], (b, l, slot))`` — ``M`` the largest count (one host sync), ``pos`` 0 on
    padding, and ``(b, l, slot)`` the flat coordinates of every ``True`` entry and its slot."""
    B, L = mask.shape
    rb, rl = mask.nonzero(as_tuple=True)  # host sync: the widths are data-dependent
    counts = mask.sum(1)
    M = int(counts.max()) if rb.numel() else 0
    slot = (torch.cumsum(mask.long(), 1) - 1)[rb, rl]
    pos = torch.zeros(B, M, dtype=torch.long, device=mask.device)
    pos[rb, slot] = rl
    valid = torch.arange(M, device=mask.device)[None, :] < counts[:, None]
    return pos, valid, (rb, rl, slot)


def select_raters(embeds: torch.Tensor, visual: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """SparseVLM's text raters (its §3.2): ``m = mean_v softmax_t(v·t)`` over the row's visual
    embeddings ``v`` and candidate text embeddings ``t``; the raters are the candidates with
    ``m`` above its mean. ``embeds`` ``[B, L, D]``, ``visual``/``candidates`` ``[B, L]`` bool →
    ``[B, L]`` bool. The products are taken in float32."""
    B, L, D = embeds.shape
    out = torch.zeros(B, L, dtype=torch.bool, device=embeds.device)
    pos, tvalid, (rb, rl, slot) = compact(candidates)
    if pos.shape[1] == 0:
        return out
    x = embeds.float()
    t = x.gather(1, pos[:, :, None].expand(B, pos.shape[1], D))  # [B, T, D]
    logits = torch.einsum("bld,btd->blt", x, t).masked_fill(~tvalid[:, None, :], Fn.NEG_INF)  # [B, L, T]
    prob = torch.softmax(logits, dim=-1).nan_to_num_(0.0)
    w = visual.float()
    m = (prob * w[:, :, None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1.0)  # [B, T]
    mean = (m * tvalid).sum(1, keepdim=True) / tvalid.sum(1, keepdim=True).clamp_min(1)
    chosen = tvalid & (m > mean) & visual.any(1, keepdim=True)
    out[rb, rl] = chosen[rb, slot]
    return out


def relation_rank(rel: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Rank of each row's raters × visual attention block ``rel`` ``[B, Q, L]`` (padding rows
    and non-visual columns zeroed, which leaves the rank unchanged), with the default tolerance
    of ``torch.linalg.matrix_rank`` for the row's own block size (``max(Q_b, n_b)·eps``), so a
    row's rank does not depend on the batch it is in. ``rows`` ``[B]``, ``cols`` ``[B]``."""
    eps = torch.finfo(rel.dtype).eps
    rtol = torch.maximum(rows, cols).to(rel.dtype) * eps
    return torch.linalg.matrix_rank(rel, rtol=rtol)


def dpc_knn_clusters(x: torch.Tensor, valid: torch.Tensor, n_clusters: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Density-peak clustering with k nearest neighbours (SparseVLM's recycling, after
    DPC-kNN), batched over rows of different sizes.

    ``x`` ``[B, M, D]`` candidate tokens (``valid`` ``[B, M]``), ``n_clusters`` ``[B]`` = c
    (1 ≤ c ≤ the row's count). Distances ``‖x_i − x_j‖/√D``; density
    ``exp(−mean of the squared distances to the c nearest, self included)``; each token's
    parent distance is the distance to the nearest denser token (the row's largest distance
    when none is denser); the c tokens with the largest ``distance × density`` are the centres,
    and every token joins its nearest centre. The release adds 1e-6 random noise to the
    densities so that no two are equal (mutual nearest neighbours otherwise tie); here an equal
    density counts as denser for the lower index, and other ties go to the lower index too. Returns ``(cluster [B, M] int64 — the index of
    the member's centre, −1 on padding; is_centre [B, M] bool)``.
    """
    B, M, D = x.shape
    xf = x.float()
    d = torch.cdist(xf, xf, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(D)  # [B, M, M], symmetric
    pair = valid[:, :, None] & valid[:, None, :]
    near = d.masked_fill(~pair, float("inf")).sort(dim=-1).values  # ascending, self first
    first_c = torch.arange(M, device=x.device)[None, None, :] < n_clusters[:, None, None]
    sq = (near.masked_fill(~first_c, 0.0) ** 2).nan_to_num_(0.0, posinf=0.0)
    density = torch.exp(-sq.sum(-1) / n_clusters[:, None].float())  # [B, M]
    density = density.masked_fill(~valid, -1.0)
    idx = torch.arange(M, device=x.device)
    di, dj = density[:, :, None], density[:, None, :]
    denser = ((dj > di) | ((dj == di) & (idx[None, None, :] < idx[None, :, None]))) & pair  # [b, i, j]: j denser
    d_max = d.masked_fill(~pair, 0.0).flatten(1).amax(1)[:, None, None]
    parent = torch.where(denser, d, d_max).amin(-1)  # [B, M]
    score = (parent * density).masked_fill(~valid, Fn.NEG_INF)
    centre = valid & (descending_rank(score) < n_clusters[:, None])
    to_centre = d.masked_fill(~centre[:, None, :], float("inf"))
    cluster = to_centre.argmin(-1)  # first minimum: ties to the lower index
    cluster = torch.where(centre, idx.expand(B, M), cluster).masked_fill(~valid, -1)
    return cluster, centre


def merge_clusters(hidden: torch.Tensor, cluster: torch.Tensor) -> torch.Tensor:
    """Each centre's token becomes the mean of its cluster: ``hidden`` ``[B, L, D]``,
    ``cluster`` ``[B, L]`` (the centre index of each member, −1 elsewhere) → ``[B, L, D]``
    (unchanged outside the centres; the mean is taken in float32)."""
    B, L, D = hidden.shape
    member = cluster >= 0
    target = (cluster.clamp_min(0) + torch.arange(B, device=hidden.device)[:, None] * L).reshape(-1)
    w = member.reshape(-1).float()
    sums = torch.zeros(B * L, D, dtype=torch.float32, device=hidden.device)
    sums.index_add_(0, target, hidden.reshape(-1, D).float() * w[:, None])
    counts = torch.zeros(B * L, dtype=torch.float32, device=hidden.device).index_add_(0, target, w)
    is_centre = counts > 0
    merged = (sums / counts.clamp_min(1.0)[:, None]).to(hidden.dtype)
    return torch.where(is_centre[:, None], merged, hidden.reshape(-1, D)).reshape(B, L, D)


def _to_int_tuple(value, name: str) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of layer indices, got {value!r}") from None
    if not out or any(v < 0 for v in out) or list(out) != sorted(set(out)):
        raise ValueError(f"{name} must be distinct layer indices ≥ 0 in increasing order, got {value!r}")
    return out


def _to_float_tuple(value, name: str) -> tuple[float, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of numbers, got {value!r}") from None


# ----------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class InLLMCompressor(Compressor):
    """Template of the in-LLM methods. As a :class:`Compressor` (the vision stage) it keeps
    every token; the LLM-side work is :meth:`stages`, :attr:`query`, :meth:`raters` and
    :meth:`keep`, run by the host adapter during the prefill."""

    #: which query rows rank the tokens: ``last`` (the prompt's last token) or ``raters``
    query: ClassVar[str] = "last"
    #: whether a per-stage ratio of the visual budget is set by ``retention_ratio``
    uses_ratio: ClassVar[bool] = True

    # The vision stage keeps every image and video token, exactly as the host lays them out.
    def select(self, layout, scores, views) -> Selection:
        return NoCompression.select(self, layout, scores, views)

    def select_video(self, layout, scores, frames) -> Selection:
        return NoCompression.select_video(self, layout, scores, frames)

    def stages(self) -> tuple[LLMStage, ...]:
        raise NotImplementedError

    def check_depth(self, num_layers: int) -> None:
        """Refuse a schedule that needs layers the LLM does not have."""
        deepest = max(max(s.score_layer, s.drop_layer) for s in self.stages())
        if deepest >= num_layers:
            raise ValueError(
                f"{self.name} drops tokens at layer(s) {[s.drop_layer for s in self.stages()]} but the LLM has "
                f"{num_layers} decoder layers"
            )

    def raters(self, embeds: torch.Tensor, visual: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` bool: the query tokens when :attr:`query` is ``raters``."""
        raise NotImplementedError

    def stage_count(self, stage: int, n0: int, current: int) -> int:
        """Visual tokens after stage ``stage`` when ``n0`` entered the LLM and ``current`` are
        present (host-side arithmetic of :meth:`keep`'s rule)."""
        raise NotImplementedError

    def token_profile(self, n0: int, num_layers: int) -> list[int]:
        """Visual tokens each decoder layer processes when ``n0`` enter the LLM — what the
        prefill FLOPs and the KV cache scale with (:mod:`llava.analysis.efficiency`)."""
        counts, current = [n0] * num_layers, n0
        for s, st in enumerate(self.stages()):
            current = self.stage_count(s, n0, current)
            counts[st.drop_layer :] = [current] * (num_layers - st.drop_layer)
        return counts

    def keep(
        self, stage: int, attn: torch.Tensor, queries: torch.Tensor, state: TokenState, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage ``stage``'s decision: ``attn`` ``[B, Q, L]`` (rows of the ``queries`` ``[B, Q]``
        bool-valid query tokens), ``hidden`` ``[B, L, D]`` the states about to be pruned →
        ``(keep [B, L] bool, hidden)`` — ``hidden`` may be rewritten at kept positions
        (SparseVLM's merged tokens)."""
        raise NotImplementedError


@dataclass(frozen=True)
class FastV(InLLMCompressor):
    """FastV (Chen et al., 2024): after layer ``k`` keep the top ``round(R·n)`` of the ``n``
    visual tokens by the head-mean attention they get from the last prompt token at layer
    ``k − 1`` (as its release reads the previous layer's attention weights); layers ``0…k−1``
    see every token."""

    name: ClassVar[str] = "fastv"
    retention_ratio: float = 0.5
    k: int = 2

    def __post_init__(self):
        super().__post_init__()
        _check_ratio(self.retention_ratio)
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"k (FastV's layer) must be an integer ≥ 1, got {self.k!r}")

    def stages(self):
        return (LLMStage(self.k - 1, self.k),)

    def keep(self, stage, attn, queries, state, hidden):
        k = round_half_even(state.n0.double() * self.retention_ratio)
        return keep_top_visual(attn[:, 0], state, k), hidden

    def stage_count(self, stage, n0, current):
        return min(current, round(n0 * self.retention_ratio))


@dataclass(frozen=True)
class PDrop(InLLMCompressor):
    """PyramidDrop (Xing et al., 2024): at each layer of ``layers`` the last prompt token's
    head-mean attention at that layer keeps ``⌊n0·ratios[s]⌋`` of the ``n0`` visual tokens
    (stage ratios relative to the count entering the LLM, as its ``image_token_ratio_list``)."""

    name: ClassVar[str] = "pdrop"
    uses_ratio: ClassVar[bool] = False
    layers: tuple[int, ...] = (8, 16, 24)
    ratios: tuple[float, ...] = (0.5, 0.25, 0.125)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "layers", _to_int_tuple(self.layers, "layers"))
        object.__setattr__(self, "ratios", _to_float_tuple(self.ratios, "ratios"))
        if self.layers[0] < 1:
            raise ValueError("PDrop's first layer must be ≥ 1 (layer 0 sees every token)")
        if len(self.ratios) != len(self.layers):
            raise ValueError(f"PDrop needs one ratio per layer: layers {self.layers}, ratios {self.ratios}")
        for r in self.ratios:
            _check_ratio(r, "each of ratios")
        if list(self.ratios) != sorted(self.ratios, reverse=True):
            raise ValueError(f"PDrop's ratios must not increase from stage to stage, got {self.ratios}")

    def stages(self):
        return tuple(LLMStage(layer, layer) for layer in self.layers)

    def keep(self, stage, attn, queries, state, hidden):
        k = torch.floor(state.n0.double() * self.ratios[stage]).long()
        return keep_top_visual(attn[:, 0], state, k), hidden

    def stage_count(self, stage, n0, current):
        return min(current, math.floor(n0 * self.ratios[stage]))


@dataclass(frozen=True)
class SparseVLM(InLLMCompressor):
    """SparseVLM (Zhang et al., 2024; the October 2024 release the paper compares).

    Raters: the text tokens after the last visual token whose embeddings attend to the
    visual ones more than average (:func:`select_raters`). At each layer of ``layers`` (which
    still sees every current token) the raters' head-mean attention ``P`` ``[raters × visual]``
    rates the visual tokens (mean over raters); unless ``P`` has full column rank, the layer's
    output keeps ``min(⌊λ·rank(P) + β⌋, n_v − 1)`` of its ``n_v`` visual tokens, and with
    ``recycle`` the best ``⌊0.3·n_del⌋ + 1`` of the dropped ones are clustered into
    ``⌊m/10⌋ + 1`` groups (:func:`dpc_knn_clusters`) whose means rejoin the sequence at their
    centre's position. ``scale`` is λ (``bias`` β): the release sets λ per benchmark; unset,
    λ = R·n0 / (number of raters), so a full-rank ``P`` keeps ``⌊R·n0⌋`` at every stage and a
    rank-deficient one proportionally fewer.
    """

    name: ClassVar[str] = "sparsevlm"
    query: ClassVar[str] = "raters"
    retention_ratio: float = 0.25
    layers: tuple[int, ...] = (2, 6, 15, 19)
    scale: float | None = None
    bias: float = 0.0
    recycle: bool = True

    RECYCLE_SHARE: ClassVar[float] = 0.3
    CLUSTER_SHARE: ClassVar[float] = 0.1

    def __post_init__(self):
        super().__post_init__()
        _check_ratio(self.retention_ratio)
        object.__setattr__(self, "layers", _to_int_tuple(self.layers, "layers"))
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale (λ) must be a finite number > 0, got {self.scale!r}")
        if not math.isfinite(self.bias):
            raise ValueError(f"bias (β) must be finite, got {self.bias!r}")
        if not isinstance(self.recycle, bool):
            raise ValueError(f"recycle must be True or False, got {self.recycle!r}")

    def stages(self):
        return tuple(LLMStage(layer, layer + 1) for layer in self.layers)

    def raters(self, embeds, visual, candidates):
        return select_raters(embeds, visual, candidates)

    def keep(self, stage, attn, queries, state, hidden):
        if self.scale is None and self.retention_ratio >= 1.0:  # R = 1 keeps everything, as every method
            return state.valid, hidden
        n_r = queries.sum(1)  # [B]
        n_v = state.visual.sum(1)
        rel = attn * (queries[:, :, None] & state.visual[:, None, :])  # [B, Q, L]
        rank = relation_rank(rel, n_r, n_v)
        score = rel.sum(1) / n_r.clamp_min(1)[:, None].float()  # mean over raters, [B, L]
        if self.scale is None:  # λ·rank = R·n0·rank/raters, multiplied first so that rank = raters gives R·n0 exactly
            lam_rank = self.retention_ratio * state.n0.double() * rank.double() / n_r.clamp_min(1).double()
        else:
            lam_rank = self.scale * rank.double()
        k = torch.minimum(torch.floor(lam_rank + self.bias).long(), n_v - 1).clamp_min(0)
        prune = (rank != n_v) & (n_r > 0) & (n_v > 0)  # full column rank or no raters: keep all
        k = torch.where(prune, k, n_v)
        keep = keep_top_visual(score, state, k)
        if not self.recycle:
            return keep, hidden
        dropped = state.visual & ~keep
        n_del = dropped.sum(1)
        m = torch.where(n_del > 0, torch.floor(n_del.double() * self.RECYCLE_SHARE).long() + 1, 0)
        cand = dropped & (descending_rank(score.masked_fill(~dropped, Fn.NEG_INF)) < m[:, None])
        c = torch.floor(m.double() * self.CLUSTER_SHARE).long() + 1
        cluster, centre = recycle_clusters(hidden, cand, c)
        return keep | centre, merge_clusters(hidden, cluster)

    def stage_count(self, stage, n0, current):
        """With raters of full row rank (``rank(P) = raters < n_v``, the usual case; the count
        then does not depend on how many raters there are) — exact for the default λ only."""
        if self.scale is not None:
            raise ValueError("with an explicit scale λ SparseVLM's counts depend on the raters' rank (data)")
        if self.retention_ratio >= 1.0 or current == 0:
            return current
        k = min(math.floor(self.retention_ratio * n0 + self.bias), current - 1)
        k = max(k, 0)
        if not self.recycle:
            return k
        m = math.floor((current - k) * self.RECYCLE_SHARE) + 1
        return k + math.floor(m * self.CLUSTER_SHARE) + 1


def recycle_clusters(hidden: torch.Tensor, cand: torch.Tensor, n_clusters: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`dpc_knn_clusters` of the ``cand`` ``[B, L]`` tokens of each row, in sequence
    positions: ``(cluster [B, L] — the position of each member's centre, −1 elsewhere; centre
    [B, L] bool)``."""
    B, L, D = hidden.shape
    cluster = torch.full((B, L), -1, dtype=torch.long, device=hidden.device)
    centre = torch.zeros(B, L, dtype=torch.bool, device=hidden.device)
    pos, valid, (rb, rl, slot) = compact(cand)
    if pos.shape[1] == 0:
        return cluster, centre
    x = hidden.gather(1, pos[:, :, None].expand(B, pos.shape[1], D))
    c = torch.minimum(n_clusters, valid.sum(1)).clamp_min(1)
    local, is_centre = dpc_knn_clusters(x, valid, c)
    cluster[rb, rl] = pos.gather(1, local.clamp_min(0))[rb, slot]
    centre[rb, rl] = is_centre[rb, slot]
    return cluster, centre


for _cls in (FastV, SparseVLM, PDrop):
    register_compressor(_cls)


def surviving_selection(record) -> tuple[torch.Tensor, torch.Tensor]:
    """``(thumb_keep [N], crop_keep [n, N])`` bool: the tokens of a
    :class:`~llava.compression.CompressedImage` that reach the LLM's last layer — the vision
    stage's selection, narrowed by the in-LLM stage when ``record.llm`` is set (a recycled
    SparseVLM token counts as its cluster centre)."""
    sel = record.selection
    if record.llm is None:
        return sel.thumb_keep, sel.crop_keep
    lay = record.layout
    n_tok = lay.tokens_per_view
    src = record.index[record.llm.kept.to(record.index.device)]
    src = src[src < lay.n_views * n_tok]  # newlines are no view token
    flat = torch.zeros(lay.n_views * n_tok, dtype=torch.bool, device=src.device).index_fill_(0, src, True)
    flat = flat.reshape(lay.n_views, n_tok)
    return flat[0], flat[1:]


def llm_stage(comp: Compressor | None) -> InLLMCompressor | None:
    """The in-LLM part of ``comp`` (itself, a pipeline's second stage, or ``None``)."""
    if comp is None:
        return None
    if isinstance(comp, InLLMCompressor):
        return comp
    return getattr(comp, "llm", None)
