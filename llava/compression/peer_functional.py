"""VisionZip, HiRED and PruMerge(+) as pure tensor functions (their configs: :mod:`.peers`).

Each function works on all views of an image at once: ``[V, N]`` scores with a ``valid`` mask of
the tokens the LLM sees (all of the thumbnail's, a crop's unpadded ones), by index maths, sorts
and matrix products — no loop over tokens and no host synchronisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .functional import _wide
from .layout import AnyResLayout, _arange, _region_ids

INF = float("inf")
MERGES = ("release", "mean", "none")
REGIONS = ("release", "spatial")


# ----------------------------------------------------------------------------- budgets


def apportion(total: int, weights: torch.Tensor, caps: torch.Tensor, max_cap: int) -> torch.Tensor:
    """Share ``total`` tokens among ``n`` views in proportion to ``weights`` ``[n]`` (counts ≥ 0), view
    ``j`` taking at most ``caps[j]`` (≤ ``max_cap``, a host-side bound) — Webster's divisor method:
    the ``t``-th token of view ``j`` has priority ``(t + ½) / w_j`` and the ``total`` smallest
    priorities win (ties: the lower view). Views of weight 0 come after every other, sharing in
    proportion to their caps. Returns ``[n]`` int64 summing to ``min(total, Σ caps)``."""
    n, wide = weights.shape[0], _wide(weights.device)
    t = torch.arange(max_cap, device=weights.device, dtype=wide)  # [M]
    zero = weights <= 0
    denom = torch.where(zero, caps.to(wide).clamp_min(1.0), weights.to(wide))  # [n]
    exists = t[None, :] < caps[:, None]  # [n, M]
    prio = ((t[None, :] + 0.5) / denom[:, None]).masked_fill(~exists, INF).reshape(-1)
    tier = (zero[:, None].long() + 2 * (~exists).long()).reshape(-1)  # weighted, weightless, no slot
    order = torch.argsort(prio, stable=True)
    order = order[torch.argsort(tier[order], stable=True)]  # by tier, then priority, then index
    chosen = torch.zeros(n * max_cap, dtype=torch.bool, device=weights.device)
    chosen[order[:total]] = True
    return (chosen & exists.reshape(-1)).reshape(n, max_cap).sum(1)


def region_counts(thumb_mask: torch.Tensor, layout: AnyResLayout, regions: str = "release") -> torch.Tensor:
    """How many of the thumbnail's marked tokens ``[N]`` fall in each crop's share ``[n]`` (int64).

    ``"release"`` (HiRED's code): the raster-order token list cut into ``n`` equal chunks, chunk
    ``j`` standing for crop ``j`` — a reshape of the ``side × side`` map to ``(grid_h, grid_w, N/n)``,
    so chunks are bands of rows whatever the grid; ``"spatial"``: the crop's region of the map (an
    even ``grid_h × grid_w`` partition, as GlobalCom²'s budgets)."""
    n, N = layout.n_crops, thumb_mask.shape[0]
    if regions == "release":
        ids = _arange(N, thumb_mask.device) * n // N
    elif regions == "spatial":
        ids = _region_ids(layout.side, layout.grid_w, layout.grid_h, thumb_mask.device)
    else:
        raise ValueError(f"unknown regions {regions!r}; valid: {', '.join(REGIONS)}")
    return torch.zeros(n, dtype=torch.long, device=thumb_mask.device).index_add_(0, ids, thumb_mask.long())


def round_share(k: torch.Tensor, share: float) -> torch.Tensor:
    """``⌊k·share + ½⌋`` as int64 (``k`` ``[V]``): the part of each view's budget given to a sub-rule."""
    return torch.floor(k.to(_wide(k.device)) * share + 0.5).long()


# ----------------------------------------------------------------------------- selection


def iqr_outliers(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """PruMerge's outliers: per view, the valid tokens scoring above ``Q3 + 1.5·(Q3 − Q1)``, the
    quartiles of the view's valid scores with linear interpolation (numpy's default percentile).
    ``scores``, ``valid`` ``[V, N]`` → ``[V, N]`` bool (none in a view without valid tokens)."""
    s = scores.to(_wide(scores.device))
    last = (valid.sum(1) - 1).clamp_min(0)  # [V]
    ordered = s.masked_fill(~valid, INF).sort(dim=1).values  # valid scores first, ascending

    def quantile(p: float) -> torch.Tensor:
        h = last.to(s.dtype) * p
        lo = h.floor().long()
        a = ordered.gather(1, lo[:, None])[:, 0]
        b = ordered.gather(1, torch.minimum(lo + 1, last)[:, None])[:, 0]
        return a + (h - lo) * (b - a)  # [V]

    q1, q3 = quantile(0.25), quantile(0.75)
    return valid & (s > (q3 + 1.5 * (q3 - q1))[:, None])


def spaced_picks(candidates: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``m[v]`` of each row's candidates ``[V, N]``, evenly spaced in index order from the first:
    the candidates of rank ``⌈i·M/m⌉`` (``i < m``) among the row's ``M`` → ``[V, N]`` bool."""
    rank = candidates.long().cumsum(1) - 1
    total = candidates.sum(1, keepdim=True).clamp_min(1)
    m = torch.minimum(m[:, None], total)
    return candidates & ((rank * m) % total < m)


def stride_picks(valid: torch.Tensor, stride: torch.Tensor, limit: int) -> torch.Tensor:
    """PruMerge+'s spatial samples: positions ``p < limit`` with ``p ≡ 0 (mod stride[v])`` among
    the valid tokens ``[V, N]`` → ``[V, N]`` bool."""
    p = _arange(valid.shape[1], valid.device)[None, :]
    return valid & (p % stride[:, None] == 0) & (p < limit)


# ----------------------------------------------------------------------------- merging


def contextual_merge(
    x: torch.Tensor, keys: torch.Tensor, dominant: torch.Tensor, valid: torch.Tensor, n_ctx: torch.Tensor,
    average: str = "release",
) -> tuple[torch.Tensor, torch.Tensor]:
    """VisionZip's contextual tokens, per view.

    The ``M`` valid tokens that are not dominant, in index order, give ``n_ctx[v]`` targets: every
    ``step``-th from the first, ``step = max(1, M // n_ctx)``. Each other one joins the target its
    key is most cosine-similar to (the first on ties). A target's feature becomes
    ``x_t + mean(joined)`` (``average="release"``, VisionZip's code: the target is not part of
    the mean, and stays ``x_t`` when nothing joins), the plain mean of the target and its joined
    tokens (``"mean"``), or stays ``x_t`` (``"none"``).

    ``x`` ``[V, N, C]``, ``keys`` ``[V, N, d]``, ``dominant``/``valid`` ``[V, N]`` bool, ``n_ctx``
    ``[V]`` → ``(targets [V, N] bool, features [V, N, C])`` in ``x``'s dtype, computed in float32.
    """
    if average not in MERGES:
        raise ValueError(f"unknown merge {average!r}; valid: {', '.join(MERGES)}")
    rest = valid & ~dominant
    rank = rest.long().cumsum(1) - 1
    step = (rest.sum(1) // n_ctx.clamp_min(1)).clamp_min(1)[:, None]  # [V, 1]
    targets = rest & (rank % step == 0) & (rank // step < n_ctx[:, None])
    if average == "none":
        return targets, x
    V, N, C = x.shape
    u = F.normalize(keys.float(), dim=-1)
    sim = torch.bmm(u, u.transpose(1, 2)).masked_fill_(~targets[:, None, :], -INF)  # [V, N(from), N(target)]
    dest = (sim.argmax(dim=-1) + _arange(V, x.device)[:, None] * N).reshape(-1)  # [V·N]
    joins = (rest & ~targets).reshape(-1).float()  # [V·N]
    xf = x.float()
    sums = xf.new_zeros(V * N, C).index_add_(0, dest, xf.reshape(-1, C) * joins[:, None]).view(V, N, C)
    counts = xf.new_zeros(V * N).index_add_(0, dest, joins).view(V, N, 1)
    merged = xf + sums / counts.clamp_min(1.0) if average == "release" else (xf + sums) / (1.0 + counts)
    return targets, torch.where(targets[..., None], merged, xf).to(x.dtype)


def neighbour_merge(
    x: torch.Tensor, keys: torch.Tensor, kept: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor,
    k: int = 32, average: str = "release",
) -> torch.Tensor:
    """PruMerge's merge, per view: every kept token gathers its ``k`` most key-similar valid tokens
    of the view (cosine; itself excluded, kept or not), weighted by their scores ``weights``:
    ``x_i + Σ_c a_c x_c`` (``average="release"``, PruMerge's code: the weights are not normalised),
    the ``a``-weighted mean of the token and its neighbours (``"mean"``), or nothing (``"none"``).

    ``x`` ``[V, N, C]``, ``keys`` ``[V, N, C']``, ``kept``/``valid`` ``[V, N]`` bool, ``weights``
    ``[V, N]`` → ``[V, N, C]`` in ``x``'s dtype (kept rows merged), computed in float32. The
    weights go into a ``[V, N, N]`` matrix, so the merge is one batched product.
    """
    if average not in MERGES:
        raise ValueError(f"unknown merge {average!r}; valid: {', '.join(MERGES)}")
    V, N, C = x.shape
    kk = min(k, N - 1)
    if average == "none" or kk <= 0:
        return x
    u = F.normalize(keys.float(), dim=-1)
    eye = torch.eye(N, dtype=torch.bool, device=x.device)
    sim = torch.bmm(u, u.transpose(1, 2)).masked_fill_(~valid[:, None, :] | eye, -INF)  # [V, N, N]
    best, idx = sim.topk(kk, dim=-1)  # [V, N, k]
    a = weights.float().gather(1, idx.reshape(V, -1)).view(V, N, kk) * torch.isfinite(best)
    a = a * kept[..., None]  # only kept tokens gather
    w = x.new_zeros(V, N, N, dtype=torch.float32).scatter_(2, idx, a)  # [V, N, N]
    xf = x.float()
    gathered = torch.bmm(w, xf)  # [V, N, C]
    if average == "release":
        merged = xf + gathered
    else:
        a_self = weights.float()[..., None]
        den = a_self + w.sum(-1, keepdim=True)
        merged = torch.where(den > 0, (a_self * xf + gathered) / den.clamp_min(1e-30), xf)
    return torch.where(kept[..., None], merged, xf).to(x.dtype)
