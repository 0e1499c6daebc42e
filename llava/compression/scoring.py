"""Token-importance scores taken from the vision tower.

``cls_attention_scores`` recomputes only the [CLS] query row of one CLIP encoder layer from
that layer's input hidden state — no attention map is ever built, so the tower itself keeps
SDPA/FlashAttention. ``neg_cos_scores`` is the CLS-free score for SigLIP-class encoders.
``received_attention`` is the other CLS-free score: the attention each token receives from
all tokens of its view (or attention window), recomputed from the layer's queries and keys in
query chunks, so no full attention map is held either. ``patch_keys`` gives one layer's patch
keys (the merge metric of VisionZip and PruMerge), and ``tower_scores`` bundles scores of one or
more layers with those keys (:class:`TowerScores`) for the vision-stage peers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

SCORE_KINDS = ("cls_logits", "cls_softmax", "neg_cos", "attn_received", "cls_softmax_onehead")
#: Score kinds that read the [CLS] token (towers without one, e.g. SigLIP, cannot give them).
CLS_KINDS = ("cls_logits", "cls_softmax", "cls_softmax_onehead")
#: What :func:`patch_keys` returns: the head-mean key ``[V, N, d]`` or all heads' keys ``[V, N, C]``.
KEY_MODES = ("head_mean", "concat")


def cls_attention_scores(layer: nn.Module, hidden: torch.Tensor, kind: str = "cls_logits") -> torch.Tensor:
    """Head-averaged attention scores of the patch tokens of a CLIP encoder ``layer``.

    Args:
        layer: a transformers ``CLIPEncoderLayer`` (``layer_norm1`` + ``self_attn`` with
            ``q_proj``/``k_proj``).
        hidden: the hidden state entering ``layer``, ``[V, 1+N, C]`` with [CLS] first.
        kind: ``"cls_logits"`` — the scaled pre-softmax [CLS]→patch logits ``q·k/√d`` (what
            the authors' release uses); ``"cls_softmax"`` — the [CLS] row's attention
            probabilities (softmax over all 1+N keys, as in the paper's Eq. 1 and FasterVLM);
            ``"cls_softmax_onehead"`` — the [CLS] row's probabilities with all heads taken as one
            head of width ``C`` (``softmax(q·k/√C)`` of the full projections, as PruMerge computes
            them); ``"attn_received"`` — what each patch receives from all 1+N tokens
            (:func:`layer_received_attention`).

    Returns:
        ``[V, N]`` float32 scores for the patch tokens — computed in float32 throughout,
        whatever the tower's dtype (an fp16 ``q·k`` can overflow).

    The keys are never projected: ``q_h·(W_h x + b_h) = (W_hᵀ q_h)·x + q_h·b_h``, so one
    ``[C]`` vector per head replaces the ``[1+N, C] × [C, C]`` key projection.
    """
    if kind == "attn_received":
        return layer_received_attention(layer, hidden)[:, 1:]
    if kind not in CLS_KINDS:
        raise ValueError(f"unknown [CLS] score kind {kind!r}; valid: {', '.join(CLS_KINDS)}, attn_received")
    attn = layer.self_attn
    heads, head_dim = attn.num_heads, attn.head_dim
    ln = layer.layer_norm1
    x = F.layer_norm(hidden.float(), ln.normalized_shape, _f32(ln.weight), _f32(ln.bias), ln.eps)  # [V, T, C]
    q = F.linear(x[:, 0], _f32(attn.q_proj.weight), _f32(attn.q_proj.bias)).view(x.shape[0], heads, head_dim)  # [V, H, d]
    w_k = _f32(attn.k_proj.weight).view(heads, head_dim, -1)  # [H, d, C]
    u = torch.einsum("vhd,hdc->vhc", q, w_k)  # [V, H, C]
    logits = torch.einsum("vtc,vhc->vht", x, u)  # [V, H, T]
    if attn.k_proj.bias is not None:
        logits = logits + torch.einsum("vhd,hd->vh", q, _f32(attn.k_proj.bias).view(heads, head_dim))[..., None]
    if kind == "cls_softmax_onehead":  # Σ_h q_h·k_h = q·k over the full width C = H·d
        return (logits.sum(dim=1) * (heads * head_dim) ** -0.5).softmax(dim=-1)[:, 1:]  # [V, N]
    logits = logits * attn.scale
    if kind == "cls_softmax":
        logits = logits.softmax(dim=-1)
    return logits[..., 1:].mean(dim=1)  # [V, N]


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float()


def neg_cos_scores(features: torch.Tensor) -> torch.Tensor:
    """``s_i = −cos(x_i, mean_j x_j)`` per view: ``[V, N, C]`` → ``[V, N]`` float32.
    Tokens unlike the view's mean are deemed more informative."""
    x = features.float()
    return -F.cosine_similarity(x, x.mean(dim=1, keepdim=True), dim=-1)


def layer_received_attention(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """:func:`received_attention` of a CLIP/SigLIP encoder ``layer`` (``layer_norm1`` +
    ``self_attn`` with ``q_proj``/``k_proj``): ``hidden`` ``[V, T, C]`` entering the layer
    → ``[V, T]`` float32, every token of a view attending to every token of that view.
    Computed in float32 whatever the tower's dtype, like :func:`cls_attention_scores`."""
    attn, ln = layer.self_attn, layer.layer_norm1
    x = F.layer_norm(hidden.float(), ln.normalized_shape, _f32(ln.weight), _f32(ln.bias), ln.eps)  # [V, T, C]
    V, T = x.shape[:2]
    q = F.linear(x, _f32(attn.q_proj.weight), _f32(attn.q_proj.bias))
    k = F.linear(x, _f32(attn.k_proj.weight), _f32(attn.k_proj.bias))
    q = q.view(V, T, attn.num_heads, attn.head_dim).transpose(1, 2)  # [V, H, T, d]
    k = k.view(V, T, attn.num_heads, attn.head_dim).transpose(1, 2)  # [V, H, T, d]
    return received_attention(q, k, attn.scale)


def received_attention(q: torch.Tensor, k: torch.Tensor, scale: float, max_elements: int = 1 << 24) -> torch.Tensor:
    """Head-mean attention each token receives from all queries of its segment:
    ``a_j = mean_h Σ_i softmax_j(q_i·k_j·scale)``.

    ``q``, ``k`` ``[S, H, T, d]``: S independent segments (views, images, attention windows)
    of T tokens. Returns ``[S, T]`` float32 (each segment's scores sum to T). The T × T maps are
    built ``max_elements`` at a time, a chunk of query rows per step, and never kept; the
    products are taken in float32 (a half-precision ``q·k`` can overflow).
    """
    q, k = q.float(), k.float()
    S, H, T, _ = q.shape
    out = torch.zeros(S, H, T, dtype=torch.float32, device=q.device)
    chunk = max(1, max_elements // max(1, S * H * T))
    kt = k.transpose(-1, -2)  # [S, H, d, T]
    for start in range(0, T, chunk):
        logits = torch.matmul(q[:, :, start : start + chunk], kt) * scale  # [S, H, c, T]
        out += logits.softmax(dim=-1).sum(dim=2)
    return out.mean(dim=1)


def patch_keys(layer: nn.Module, hidden: torch.Tensor, mode: str = "head_mean") -> torch.Tensor:
    """The patch tokens' keys at a CLIP encoder ``layer`` (``layer_norm1`` → ``k_proj``, bias
    included), from the hidden state entering it ``[V, 1+N, C]`` ([CLS] first), in float32.

    ``mode="head_mean"``: averaged over the heads, ``[V, N, d]`` (VisionZip's merge metric);
    ``"concat"``: every head's key side by side, ``[V, N, C]`` (PruMerge's)."""
    if mode not in KEY_MODES:
        raise ValueError(f"unknown key mode {mode!r}; valid: {', '.join(KEY_MODES)}")
    attn, ln = layer.self_attn, layer.layer_norm1
    x = F.layer_norm(hidden[:, 1:].float(), ln.normalized_shape, _f32(ln.weight), _f32(ln.bias), ln.eps)  # [V, N, C]
    k = F.linear(x, _f32(attn.k_proj.weight), _f32(attn.k_proj.bias))  # [V, N, C]
    if mode == "concat":
        return k
    return k.view(*k.shape[:2], attn.num_heads, attn.head_dim).mean(dim=2)  # [V, N, d]


class TowerScores(NamedTuple):
    """Everything a vision-stage method reads from the tower, per view (a request with
    ``keys`` or ``extra_layers``; otherwise the scores alone travel as a plain tensor)."""

    scores: torch.Tensor  # [V, N] float32, at the request's layer
    keys: torch.Tensor | None = None  # [V, N, d] patch keys of that layer (see patch_keys)
    extra: torch.Tensor | None = None  # [V, E, N] the same score at request.extra_layers

    def split(self, sizes: list[int]) -> list[TowerScores]:
        """Per-image pieces along the view dimension (like ``Tensor.split``)."""
        parts = [t.split(sizes) if t is not None else [None] * len(sizes) for t in self]
        return [TowerScores(*p) for p in zip(*parts)]


def wants_tower_scores(request) -> bool:
    """Whether a score request asks for more than one score map (keys or extra layers)."""
    return request is not None and (getattr(request, "keys", None) is not None or bool(getattr(request, "extra_layers", ())))


def request_layers(request, n_layers: int) -> tuple[int, ...]:
    """The encoder layers a request reads (its scoring layer first), normalised to ``0 … n-1``."""
    out = []
    for layer in (request.layer, *getattr(request, "extra_layers", ())):
        idx = layer + n_layers if layer < 0 else layer
        if not 0 <= idx < n_layers:
            raise ValueError(f"score layer {layer} out of range for a {n_layers}-layer vision tower")
        out.append(idx)
    return tuple(out)


def layer_tower_scores(
    layer: nn.Module, hidden: torch.Tensor, kind: str, keys: str | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One layer's part of a :class:`TowerScores`: its scores ``[V, N]`` of ``kind`` and, when
    ``keys`` names a mode, its patch keys (:func:`patch_keys`), from the hidden state entering it."""
    return cls_attention_scores(layer, hidden, kind), (patch_keys(layer, hidden, keys) if keys is not None else None)


def join_tower_scores(parts: Mapping[int, tuple[torch.Tensor, torch.Tensor | None]], layers: Sequence[int]) -> TowerScores:
    """A :class:`TowerScores` from per-layer :func:`layer_tower_scores` parts; ``layers`` as
    :func:`request_layers` gives them (the scoring layer first)."""
    main, *extra = layers
    scores, keys = parts[main]
    more = torch.stack([parts[i][0] for i in extra], dim=1) if extra else None  # [V, E, N]
    return TowerScores(scores, keys, more)


def tower_scores(layers: Sequence[nn.Module], hidden_at: Callable[[int], torch.Tensor], request) -> TowerScores:
    """:class:`TowerScores` for ``request`` from CLIP encoder ``layers``; ``hidden_at(i)`` is the
    hidden state entering layer ``i`` ``[V, 1+N, C]``. Only [CLS] rows and keys are computed —
    never an attention map — so the tower runs on whatever attention kernel it has."""
    wanted, part = tower_score_parts(layers, request)
    return join_tower_scores({i: part(i, hidden_at(i)) for i in dict.fromkeys(wanted)}, wanted)


def tower_score_parts(layers: Sequence[nn.Module], request) -> tuple[tuple[int, ...], Callable[[int, torch.Tensor], Any]]:
    """The encoder layers ``request`` reads (scoring layer first) and ``part(i, hidden_i)``,
    which scores layer ``i`` (with the keys at the scoring layer): for a tower that hands each
    wanted layer's input to a tap while it runs, and for :func:`tower_scores`."""
    wanted = request_layers(request, len(layers))

    def part(i: int, hidden: torch.Tensor):
        return layer_tower_scores(layers[i], hidden, request.kind, request.keys if i == wanted[0] else None)

    return wanted, part
