"""Token-importance scores taken from the vision tower.

``cls_attention_scores`` recomputes only the [CLS] query row of one CLIP encoder layer from
that layer's input hidden state — no attention map is ever built, so the tower itself keeps
SDPA/FlashAttention. ``neg_cos_scores`` is the CLS-free score for SigLIP-class encoders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCORE_KINDS = ("cls_logits", "cls_softmax", "neg_cos")


def cls_attention_scores(layer: nn.Module, hidden: torch.Tensor, kind: str = "cls_logits") -> torch.Tensor:
    """Head-averaged [CLS]→patch attention of a CLIP encoder ``layer``.

    Args:
        layer: a transformers ``CLIPEncoderLayer`` (``layer_norm1`` + ``self_attn`` with
            ``q_proj``/``k_proj``).
        hidden: the hidden state entering ``layer``, ``[V, 1+N, C]`` with [CLS] first.
        kind: ``"cls_logits"`` — the scaled pre-softmax logits ``q·k/√d`` (what the authors'
            release uses); ``"cls_softmax"`` — the attention probabilities (softmax over all
            1+N keys, as in the paper's Eq. 1 and FasterVLM).

    Returns:
        ``[V, N]`` float32 scores for the patch tokens — computed in float32 throughout,
        whatever the tower's dtype (an fp16 ``q·k`` can overflow).

    The keys are never projected: ``q_h·(W_h x + b_h) = (W_hᵀ q_h)·x + q_h·b_h``, so one
    ``[C]`` vector per head replaces the ``[1+N, C] × [C, C]`` key projection.
    """
    if kind not in ("cls_logits", "cls_softmax"):
        raise ValueError(f"unknown [CLS] score kind {kind!r}; valid: cls_logits, cls_softmax")
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
