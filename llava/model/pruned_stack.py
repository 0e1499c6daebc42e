"""The decoder stack with in-LLM token pruning (FastV, SparseVLM, PDrop): a runner
(:func:`pruned_forward`) that calls each decoder layer of a transformers causal LM with its
own mask, positions and kept tokens. It serves our LLaVA tree (:mod:`llava.model.hf_adapter`)
and, through :func:`llm_pruning`, transformers' own VLMs (:mod:`llava.hf`).

**How the KV cache stays consistent.** The prefill runs layer by layer. At a drop the
sequence is re-packed (the survivors, left-padded per row) and every later layer computes,
caches and attends over the survivors only, so layer ``l``'s cache holds the ``L_l`` tokens
that layer saw — lengths differ between layer *groups* (the layers between two drops).
Every token keeps its original position: the rotary embedding is computed once for the full
prompt and gathered with the tokens (Qwen's 3-row M-RoPE included), and decoding continues
from the positions the host computes for the full prompt. transformers 5 sizes a causal mask
from one cache layer and a 2-D padding mask over *all* columns, so the runner remembers, per
cache (a weak map: the state lives exactly as long as the cache), which original columns each
group kept; at every decoding step it builds each group's padding mask from those columns plus
the new tokens' and sizes it with that group's first cache layer
(``create_causal_mask(..., layer_idx=)``). Layer 0 is never pruned, so
``cache.get_seq_length()`` stays the full prompt's length and the host's position and
cache-position arithmetic is unchanged. The attention rows a method ranks with are recomputed
from the layer's input (queries only for the few query tokens, keys for all, RoPE applied as
the layer does), so every layer keeps SDPA/FlashAttention and no attention map is built.
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast

from llava.compression import CompressedImage
from llava.compression.in_llm import InLLMCompressor, LLMStage, TokenState, compact
from llava.compression.records import LLMRecord


@dataclass
class LLMPruning:
    """One batch's in-LLM pruning plan: the method and where the visual tokens are.

    ``image_ids`` ``[B, L0]``: for every token of the prompt, the index of its image in
    ``records`` (−1 for text); ``L0`` is the prompt's width — tokens after it (a cache-free
    decoding loop appends the generated ones) are text that no query selection looks at.
    After each prefill the records get an :class:`~llava.compression.records.LLMRecord`."""

    method: InLLMCompressor
    image_ids: torch.Tensor
    records: list[CompressedImage] = field(default_factory=list)

    def run_positions(self) -> torch.Tensor:
        """``[B, L0]``: each visual token's index in its image's packed sequence (−1 on text)."""
        ids = self.image_ids
        cols = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        n = len(self.records) or int(ids.max()) + 1
        first = torch.full((max(n, 1),), ids.shape[1], dtype=torch.long, device=ids.device)
        is_img = ids >= 0
        first.scatter_reduce_(0, ids[is_img], cols[is_img], reduce="amin")
        return torch.where(is_img, cols - first[ids.clamp_min(0)], -1)


def image_ids_from_runs(is_image: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """``[B, L]``: the image index of every placeholder token of a (spliced) prompt, images in
    row-major order with ``counts[i]`` tokens each; −1 elsewhere."""
    rank = is_image.reshape(-1).long().cumsum(0).reshape(is_image.shape) - 1
    ends = torch.tensor(counts, dtype=torch.long, device=is_image.device).cumsum(0)
    ids = torch.searchsorted(ends, rank.clamp_min(0), right=True)
    return torch.where(is_image, ids, -1)


@dataclass
class _PrunedCache:
    """What a cache filled by a pruned prefill needs at every later step: per layer group,
    its first layer and the prompt columns it kept (``[B, L_g]``, −1 = padding slot)."""

    groups: list[tuple[int, torch.Tensor]]
    width: int


_PRUNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pop_cache(kwargs: dict) -> Cache | None:
    """Pop the KV cache from ``kwargs`` under either name (``cache``, or the older
    ``past_key_values``)."""
    cache = kwargs.pop("cache", None)
    old = kwargs.pop("past_key_values", None)
    return cache if cache is not None else old


def is_pruned(cache: Cache | None) -> bool:
    """Whether ``cache`` was filled by a pruned prefill (later steps must use the runner)."""
    return cache is not None and cache in _PRUNED


def _check_stack(base: nn.Module, cache: Cache | None, attention_mask) -> None:
    cfg = base.config
    types = getattr(cfg, "layer_types", None)
    sliding = (getattr(cfg, "sliding_window", None) is not None and getattr(cfg, "use_sliding_window", True)
               if types is None else any(t != "full_attention" for t in types))
    if sliding:
        raise NotImplementedError("in-LLM token pruning supports full-attention layers only (no sliding windows)")
    if cache is not None and (not isinstance(cache, DynamicCache) or getattr(cache, "is_compileable", False)):
        raise NotImplementedError(f"in-LLM token pruning needs a DynamicCache (per-layer lengths), got {type(cache).__name__}")
    if attention_mask is not None and (isinstance(attention_mask, dict) or attention_mask.ndim != 2):
        raise ValueError("in-LLM token pruning builds its own per-layer masks; pass a 2-D attention_mask")


def _rotary(base: nn.Module, hidden: torch.Tensor, position_ids, past: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` ``[B, L, d]`` of the tokens, as the host's forward computes them (Qwen's
    M-RoPE: 3 rows, a leading text row of 4 dropped)."""
    B, L = hidden.shape[:2]
    if position_ids is None:
        position_ids = (torch.arange(L, device=hidden.device) + past)[None]
    mrope = hasattr(base.rotary_emb, "mrope_section")
    if mrope:
        if position_ids.ndim == 2:
            position_ids = position_ids[None].expand(3, position_ids.shape[0], -1)
        elif position_ids.shape[0] == 4:
            position_ids = position_ids[1:]
    cos, sin = base.rotary_emb(hidden, position_ids)
    return cos.expand(B, L, -1), sin.expand(B, L, -1)


def attention_rows(layer: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   rows: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Head-mean attention probabilities of the query tokens ``rows`` ``[B, Q]`` at decoder
    ``layer`` over the keys of the sequence ``hidden`` ``[B, L, D]`` entering it → ``[B, Q, L]``
    float32. Queries and keys are projected and rotated exactly as the layer does
    (``input_layernorm``, ``q_proj``/``k_proj``, the module's ``apply_rotary_pos_emb`` with
    ``cos``/``sin`` ``[B, L, d]``), then the products and the softmax are taken in float32; a
    query attends to the valid keys at or before it (causal). Only ``Q`` query rows are ever
    formed, never an ``L × L`` map."""
    attn = layer.self_attn
    cfg = attn.config
    B, L, D = hidden.shape
    Q = rows.shape[1]
    H, Hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim
    rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    x = layer.input_layernorm(hidden)
    xq = x.gather(1, rows[:, :, None].expand(B, Q, D))
    q = attn.q_proj(xq).view(B, Q, H, d).transpose(1, 2)  # [B, H, Q, d]
    k = attn.k_proj(x).view(B, L, Hkv, d).transpose(1, 2)  # [B, Hkv, L, d]
    cq = cos.gather(1, rows[:, :, None].expand(B, Q, cos.shape[-1]))
    sq = sin.gather(1, rows[:, :, None].expand(B, Q, sin.shape[-1]))
    q = rotate(q, q, cq, sq)[0].float()
    k = rotate(k, k, cos, sin)[1].float()
    logits = torch.einsum("bkgqd,bkld->bkgql", q.view(B, Hkv, H // Hkv, Q, d), k) * attn.scaling  # [B, Hkv, g, Q, L]
    keys = torch.arange(L, device=hidden.device)
    allowed = valid[:, None, :] & (keys[None, None, :] <= rows[:, :, None])  # [B, Q, L]
    logits = logits.masked_fill(~allowed[:, None, None], float("-inf"))
    return torch.softmax(logits, dim=-1).nan_to_num_(0.0).mean(dim=(1, 2))


def _repack(keep: torch.Tensor, *tensors: torch.Tensor, cols: torch.Tensor, visual: torch.Tensor):
    """Keep the ``keep`` ``[B, L]`` tokens of every row, left-padded to the widest row: each of
    ``tensors`` ``[B, L, ...]`` is gathered; ``cols`` (−1 on padding) and ``visual`` too.
    Returns ``(tensors..., cols, visual, valid)``."""
    B, L = keep.shape
    n = keep.sum(1)
    W = int(n.max())  # host sync: the new width is data-dependent
    slot = torch.where(keep, W - n[:, None] + torch.cumsum(keep.long(), 1) - 1, W)  # dropped → scratch column W
    src = torch.zeros(B, W + 1, dtype=torch.long, device=keep.device)
    src.scatter_(1, slot, torch.arange(L, device=keep.device).expand(B, L))
    src = src[:, :W]
    valid = torch.arange(W, device=keep.device)[None, :] >= (W - n)[:, None]
    out = [t.gather(1, src.view(B, W, *([1] * (t.dim() - 2))).expand(B, W, *t.shape[2:])) for t in tensors]
    return (*out, cols.gather(1, src).masked_fill(~valid, -1), visual.gather(1, src) & valid, valid)


def _locate(cols: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Where the original columns ``wanted`` ``[B, Q]`` sit in the current sequence (``cols``
    ``[B, L]``, ascending per row with −1 padding first)."""
    return torch.searchsorted(cols, wanted).clamp_max(cols.shape[1] - 1)


def _causal_mask(base: nn.Module, hidden: torch.Tensor, mask2d: torch.Tensor, cache: Cache | None, layer: int):
    return create_causal_mask(config=base.config, inputs_embeds=hidden, attention_mask=mask2d, cache=cache,
                              position_ids=None, layer_idx=layer if cache is not None else None)


def _call_layer(layer, hidden, mask, cos, sin, cache, use_cache, kwargs) -> torch.Tensor:
    out = layer(hidden, attention_mask=mask, position_embeddings=(cos, sin), position_ids=None, cache=cache,
                use_cache=use_cache, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def pruned_forward(base: nn.Module, plan: LLMPruning | None, *, input_ids=None, attention_mask=None,
                   position_ids=None, inputs_embeds=None, cache: Cache | None = None, use_cache: bool | None = None,
                   **kwargs) -> BaseModelOutputWithPast:
    """The base model's forward (embeddings → decoder layers → norm) with ``plan``'s in-LLM
    token pruning in the prefill, or — for a cache filled by a pruned prefill — the decoding
    step over per-group caches (see the module docstring). Returns the final hidden states at
    the *original* positions ``[B, L, D]``: a token dropped inside the LLM has no output and
    gets a zero hidden state (so logits line up with the input; generation reads the last,
    text, position)."""
    if kwargs.pop("output_attentions", False) or kwargs.pop("output_hidden_states", False):
        raise NotImplementedError("in-LLM token pruning returns neither attention maps nor per-layer hidden states")
    kwargs.pop("return_dict", None)
    kwargs.pop("cache_position", None)
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")
    h = base.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
    use_cache = base.config.use_cache if use_cache is None else use_cache
    if use_cache and cache is None:
        cache = DynamicCache(config=base.config)
    _check_stack(base, cache, attention_mask)
    past = cache.get_seq_length() if cache is not None else 0
    B, L = h.shape[:2]
    mask2d = (torch.ones(B, past + L, dtype=torch.bool, device=h.device) if attention_mask is None
              else attention_mask.to(device=h.device, dtype=torch.bool))
    if mask2d.shape != (B, past + L):
        raise ValueError(f"attention_mask of shape {tuple(mask2d.shape)}; expected {(B, past + L)}")
    cos, sin = _rotary(base, h, position_ids, past)
    state = _PRUNED.get(cache) if cache is not None else None
    if past:
        if state is None:
            raise RuntimeError("in-LLM pruning: the cache holds tokens of an unpruned prefill")
        h = _decode(base, state, h, mask2d, cos, sin, cache, use_cache, kwargs)
        return BaseModelOutputWithPast(last_hidden_state=base.norm(h), cache=cache if use_cache else None)
    if plan is None:
        raise ValueError("in-LLM pruning: no plan for this prefill")
    h, groups = _prefill(base, plan, h, mask2d, cos, sin, cache, use_cache, kwargs)
    if cache is not None and use_cache:
        _PRUNED[cache] = _PrunedCache(groups, L)
    return BaseModelOutputWithPast(last_hidden_state=h, cache=cache if use_cache else None)


def _prefill(base, plan: LLMPruning, h, valid, cos, sin, cache, use_cache, kwargs):
    method = plan.method
    B, L = h.shape[:2]
    L0 = plan.image_ids.shape[1]
    if plan.image_ids.shape[0] != B or L0 > L:
        raise ValueError(
            f"in-LLM pruning: the plan covers {plan.image_ids.shape[0]} rows of {L0} tokens but the LLM got "
            f"{B} rows of {L} (beam search and num_return_sequences > 1 are not supported)"
        )
    method.check_depth(len(base.layers))
    ids = torch.full((B, L), -1, dtype=torch.long, device=h.device)
    ids[:, :L0] = plan.image_ids.to(h.device)
    cols = torch.arange(L, device=h.device).expand(B, L).contiguous()
    visual = (ids >= 0) & valid
    in_prompt = valid & (cols < L0)
    if method.query == "raters":
        last_visual = torch.where(visual, cols, -1).amax(1, keepdim=True)
        candidates = in_prompt & ~visual & (cols > last_visual)
        q_cols, q_valid, _ = compact(method.raters(h, visual, candidates))
    else:  # the prompt's last token
        q_cols = torch.where(in_prompt, cols, -1).amax(1, keepdim=True)
        q_valid = q_cols >= 0
        q_cols = q_cols.clamp_min(0)
    n0 = visual.sum(1)
    stages: tuple[LLMStage, ...] = method.stages()
    groups = [(0, cols)]
    full = (ids, valid)
    pending: dict[int, torch.Tensor] = {}
    mask = None

    def drop(s: int, layer: int):
        nonlocal h, cos, sin, cols, visual, valid, mask
        keep, h = method.keep(s, pending.pop(s), q_valid, TokenState(visual, valid, n0), h)
        h, cos, sin, cols, visual, valid = _repack(keep & valid, h, cos, sin, cols=cols, visual=visual)
        groups.append((layer, cols))
        mask = None

    for i, layer in enumerate(base.layers):
        for s, st in enumerate(stages):
            if st.drop_layer == i and st.score_layer < i:
                drop(s, i)
        for s, st in enumerate(stages):
            if st.score_layer == i:
                pending[s] = attention_rows(layer, h, cos, sin, _locate(cols, q_cols), valid)
                if st.drop_layer == i:
                    drop(s, i)
        if mask is None:
            mask = _causal_mask(base, h, valid, cache, i)
        h = _call_layer(layer, h, mask, cos, sin, cache, use_cache, kwargs)
    h = base.norm(h)
    _record(plan, full, groups, len(base.layers))
    out = h.new_zeros(B, L + 1, h.shape[-1])  # back to the original columns; dropped tokens → 0
    target = torch.where(cols >= 0, cols, L)  # padding slots → scratch column L
    out.scatter_(1, target[:, :, None].expand_as(h), h)
    return out[:, :L], groups


def _decode(base, state: _PrunedCache, h, mask2d, cos, sin, cache, use_cache, kwargs):
    prompt, extra = mask2d[:, : state.width], mask2d[:, state.width :]
    masks = []
    for start, cols in state.groups:
        kept = prompt.gather(1, cols.clamp_min(0)) & (cols >= 0)
        masks.append((start, _causal_mask(base, h, torch.cat([kept, extra], dim=1), cache, start)))
    starts = [start for start, _ in masks]
    for i, layer in enumerate(base.layers):
        h = _call_layer(layer, h, masks[_group_of(starts, i)][1], cos, sin, cache, use_cache, kwargs)
    return h


def _record(plan: LLMPruning, full, groups, n_layers: int) -> None:
    """Fill every image's :class:`LLMRecord` (host-side; syncs once per prefill)."""
    if not plan.records:
        return
    ids, valid = full
    n = len(plan.records)
    run_pos = torch.full_like(ids, -1)
    run_pos[:, : plan.image_ids.shape[1]] = plan.run_positions().to(ids.device)
    per_group, totals = [], []
    for _, cols in groups:
        present = cols >= 0
        img = ids.gather(1, cols.clamp_min(0)).masked_fill(~present, -1)
        per_group.append(torch.bincount(img[img >= 0], minlength=n)[:n])
        totals.append(present.sum(1))
    row_of = torch.full((n,), -1, dtype=torch.long, device=ids.device)
    is_img = ids >= 0
    row_of.scatter_(0, ids[is_img], torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(ids)[is_img])
    counts = torch.stack(per_group).T.tolist()  # [n, groups]
    seq = torch.stack(totals).T[row_of.clamp_min(0)].tolist()  # [n, groups]
    starts = [s for s, _ in groups]
    last_cols = groups[-1][1]
    last_img = ids.gather(1, last_cols.clamp_min(0)).masked_fill(last_cols < 0, -1)
    last_pos = run_pos.gather(1, last_cols.clamp_min(0))
    stages = [tuple(s) for s in plan.method.stages()]
    for i, rec in enumerate(plan.records):
        per_layer = [counts[i][_group_of(starts, layer)] for layer in range(n_layers)]
        seq_layer = [seq[i][_group_of(starts, layer)] for layer in range(n_layers)]
        kept = torch.sort(last_pos[last_img == i]).values
        rec.llm = LLMRecord(plan.method.name, stages, per_layer, seq_layer, kept)


def _group_of(starts: list[int], layer: int) -> int:
    g = 0
    while g + 1 < len(starts) and starts[g + 1] <= layer:
        g += 1
    return g


@contextlib.contextmanager
def llm_pruning(base: nn.Module, plan: LLMPruning) -> Iterator[None]:
    """While active, calls of ``base`` (a transformers decoder stack, e.g.
    ``model.model.language_model``) run :func:`pruned_forward` with ``plan`` — the prefill and
    every decoding step that uses a cache it filled. A reversible wrapper on this instance
    only; not for concurrent use of one model by several threads."""
    if "forward" in base.__dict__:
        raise RuntimeError("in-LLM pruning is already active on this model")
    original = base.forward

    def forward(*args, **kwargs):
        if args:
            raise TypeError("in-LLM pruning: call the decoder stack with keyword arguments")
        return pruned_forward(base, plan, cache=pop_cache(kwargs), **kwargs)

    forward.__wrapped__ = original
    base.forward = forward
    try:
        yield
    finally:
        base.__dict__.pop("forward", None)


__all__ = ["LLMPruning", "attention_rows", "image_ids_from_runs", "is_pruned", "llm_pruning", "pop_cache", "pruned_forward"]
