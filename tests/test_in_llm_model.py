"""In-LLM pruning on our LLaVA-NeXT tree: recomputed attention rows equal eager attention,
keep-all equals vanilla, FastV's selection and survivors' outputs equal an independent
masked-key reference, cache ≡ cache-free decoding, per-layer counts, batch ≡ singles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from llava.compression import build_compressor
from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.pruned_stack import _rotary, attention_rows

PROMPTS = ["USER: <image>\nWhat is in the image? ASSISTANT:", "USER: <image>\nHow many people are there? ASSISTANT:"]
SIZES = [(336, 336), (400, 300)]


def image(size, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def inputs(tok, model, proc, rows=(0,)):
    """``(input_ids [B, L] right-padded, attention_mask, pixels list, sizes)`` for prompt/image ``rows``."""
    ids = [tokenizer_image_token(PROMPTS[r], tok, return_tensors="pt") for r in rows]
    L = max(len(i) for i in ids)
    batch = torch.zeros(len(ids), L, dtype=torch.long)
    mask = torch.zeros(len(ids), L, dtype=torch.long)
    for b, i in enumerate(ids):
        batch[b, : len(i)], mask[b, : len(i)] = i, 1
    imgs = [image(SIZES[r], r) for r in rows]
    return batch, mask, process_images(imgs, proc, model.config), [im.size for im in imgs]


def generate(tok, model, proc, comp, rows=(0,), **kw):
    ids, mask, px, sizes = inputs(tok, model, proc, rows)
    records = []
    out = model.generate(ids, attention_mask=mask, images=px, image_sizes=sizes, compressor=comp,
                         image_records=records, do_sample=False, max_new_tokens=kw.pop("max_new_tokens", 5),
                         pad_token_id=tok.pad_token_id, **kw)
    return out, records


# ----------------------------------------------------------------------------- attention rows


def test_attention_rows_equal_eager_attention_weights(tiny_deep):
    """The recomputed rows (RoPE, GQA-free Llama here; left padding) equal what the eager
    kernel materialises, at every layer."""
    _, model, _ = tiny_deep
    torch.manual_seed(0)
    B, L = 2, 23
    embeds = torch.randn(B, L, model.config.hidden_size)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, :5] = 0
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    base = model.model
    try:
        base.set_attn_implementation("eager")
        with torch.no_grad():
            out = base(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, output_attentions=True,
                       output_hidden_states=True, use_cache=False)
            cos, sin = _rotary(base, embeds, pos, 0)
            rows = torch.tensor([[L - 1, 7, 12], [L - 1, 9, 5]])
            for i, layer in enumerate(base.layers):
                got = attention_rows(layer, out.hidden_states[i], cos, sin, rows, mask.bool())
                want = out.attentions[i].float().mean(1).gather(1, rows[:, :, None].expand(B, 3, L))
                assert torch.allclose(got[0], want[0], atol=1e-6)
                assert torch.allclose(got[1, :2], want[1, :2], atol=1e-6)  # row 1's query 5 is padding
    finally:
        base.set_attn_implementation("sdpa")


# ----------------------------------------------------------------------------- keep-all and references


KEEP_ALL = [
    ("fastv", dict(k=1, retention_ratio=1.0)),
    ("sparsevlm", dict(layers=(0,), retention_ratio=1.0)),
    ("pdrop", dict(layers=(1,), ratios=(1.0,))),
]


def test_keep_all_is_vanilla(tiny, model):
    """One row: bit for bit, every method, and a pipeline whose in-LLM stage keeps everything
    is its vision stage. A right-padded batch (re-packed left-padded at the drop): to float
    rounding."""
    tok, _, proc, _ = tiny
    ids, mask, px, sizes = inputs(tok, model, proc)
    with torch.no_grad():
        ref = model(ids, images=px, image_sizes=sizes, compressor=None).logits
        for name, opts in KEEP_ALL:
            records = []
            out = model(ids, images=px, image_sizes=sizes, compressor=build_compressor(name, **opts),
                        image_records=records).logits
            assert torch.equal(out, ref), name
            assert records[0].llm.tokens_per_layer == [records[0].index.shape[0]] * 2
        pipe = build_compressor("globalcom2+fastv", retention_ratio=0.25, vision_ratio=0.25, k=1)
        assert pipe.llm.retention_ratio == 1.0
        alone = build_compressor("globalcom2", retention_ratio=0.25)
        assert torch.equal(model(ids, images=px, image_sizes=sizes, compressor=pipe).logits,
                           model(ids, images=px, image_sizes=sizes, compressor=alone).logits)
        ids, mask, px, sizes = inputs(tok, model, proc, (0, 1))
        ref = model(ids, attention_mask=mask, images=px, image_sizes=sizes, compressor=None).logits
        records = []
        out = model(ids, attention_mask=mask, images=px, image_sizes=sizes,
                    compressor=build_compressor(*KEEP_ALL[0][:1], **KEEP_ALL[0][1]), image_records=records).logits
    valid = torch.zeros(ref.shape[:2], dtype=torch.bool)  # right padding: the real positions of each row
    for b, rec in enumerate(records):
        valid[b, : int(mask[b].sum()) - 1 + rec.index.shape[0]] = True
    assert torch.allclose(out[valid], ref[valid], atol=1e-5)


def masked_key_reference(base, embeds, drop_from: int, dropped: torch.Tensor) -> torch.Tensor:
    """The unpruned stack run layer by layer with an explicit additive mask that hides the
    ``dropped`` ``[L]`` columns as keys from layer ``drop_from`` on — in a causal model this is
    what dropping them from the sequence means for every other token."""
    L = embeds.shape[1]
    pos = torch.arange(L)[None]
    cos, sin = base.rotary_emb(embeds, pos)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    h = embeds
    for i, layer in enumerate(base.layers):
        allowed = causal & ~dropped[None, :] if i >= drop_from else causal
        bias = torch.zeros(1, 1, L, L).masked_fill(~allowed, float("-inf"))
        h = layer(h, attention_mask=bias, position_embeddings=(cos, sin), position_ids=pos, cache=None, use_cache=False)
    return base.norm(h)


def test_fastv_selection_and_survivors_equal_independent_references(tiny_deep):
    """FastV's kept tokens = the top round(R·n) of layer K−1's eager attention (last prompt
    token, head mean); the survivors' final states = the unpruned stack with the dropped
    tokens hidden as keys from layer K on (original positions kept)."""
    tok, model, proc = tiny_deep
    ids, _, px, sizes = inputs(tok, model, proc)
    K, R = 2, 0.3
    with torch.no_grad():
        _, _, _, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, px, sizes,
                                                                          compressor=None)
        start = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero())
        records = []
        logits = model(ids, images=px, image_sizes=sizes, compressor=build_compressor("fastv", retention_ratio=R, k=K),
                       image_records=records).logits
        rec = records[0]
        n = rec.index.shape[0]
        base = model.model
        base.set_attn_implementation("eager")
        try:
            att = base(inputs_embeds=embeds, output_attentions=True, use_cache=False).attentions[K - 1]
        finally:
            base.set_attn_implementation("sdpa")
        scores = att[0].float().mean(0)[-1, start : start + n]
        want = torch.sort(torch.argsort(scores, descending=True, stable=True)[: round(R * n)]).values
        assert torch.equal(rec.llm.kept, want)
        assert rec.llm.tokens_per_layer == [n, n, round(R * n), round(R * n)]
        text = embeds.shape[1] - n
        assert rec.llm.sequence_tokens_per_layer == [t + text for t in rec.llm.tokens_per_layer]
        dropped = torch.ones(embeds.shape[1], dtype=torch.bool)
        dropped[:start] = dropped[start + n :] = False
        dropped[start + want] = False
        ref = model.lm_head(masked_key_reference(base, embeds, K, dropped))
    keep = ~dropped
    assert torch.allclose(logits[0, keep], ref[0, keep], atol=1e-4)
    assert (logits[0, dropped] == logits[0, dropped][0]).all()  # dropped positions: the head of a zero state


# ----------------------------------------------------------------------------- decoding, counts, batches

DEEP = [
    ("fastv", dict(k=1, retention_ratio=0.2)),
    ("sparsevlm", dict(layers=(0, 2), retention_ratio=0.2)),
    ("pdrop", dict(layers=(1, 3), ratios=(0.5, 0.2))),
]


@pytest.mark.parametrize("name,opts", DEEP)
def test_cached_decoding_equals_recomputing_the_pruned_prefill_and_counts(tiny_deep, name, opts):
    """Decoding with the per-group cache = re-running the pruned prefill on prompt + new tokens
    at every step; the per-layer counts follow the method's schedule."""
    tok, model, proc = tiny_deep
    comp = build_compressor(name, **opts)
    cached, records = generate(tok, model, proc, comp, use_cache=True, max_new_tokens=3)
    free, _ = generate(tok, model, proc, comp, use_cache=False, max_new_tokens=3)
    assert cached.tolist() == free.tolist()
    counts = records[0].llm.tokens_per_layer
    n = records[0].index.shape[0]
    # the efficiency tool's arithmetic (full-rank raters for SparseVLM) predicts the run's counts
    assert comp.token_profile(n, 4) == counts
    if name == "fastv":
        assert counts == [n, round(0.2 * n), round(0.2 * n), round(0.2 * n)]
    elif name == "pdrop":
        assert counts == [n, n // 2, n // 2, int(n * 0.2)]
    else:  # drops after layers 0 and 2: ⌊λ·rank⌋ ≤ ⌊R·n⌋ kept (full-rank raters) + recycled clusters
        assert counts[0] == n and counts[1] == counts[2] < n and counts[3] <= counts[2]
        assert counts[1] >= int(0.2 * n) // 2


def test_batch_equals_singles(tiny_deep):
    """Left-padded rows of different lengths select, count and answer as they do alone —
    SparseVLM, whose ranks, raters and recycling clusters are per row (FastV and PDrop share
    its re-packing and its per-row top-k)."""
    tok, model, proc = tiny_deep
    comp = build_compressor(*DEEP[1][:1], **DEEP[1][1])
    both, rec_both = generate(tok, model, proc, comp, rows=(0, 1), max_new_tokens=3)
    for r in (0, 1):
        one, rec = generate(tok, model, proc, comp, rows=(r,), max_new_tokens=3)
        assert both[r].tolist()[-one.shape[1]:] == one[0].tolist()
        assert rec_both[r].llm.tokens_per_layer == rec[0].llm.tokens_per_layer
        assert torch.equal(rec_both[r].llm.kept, rec[0].llm.kept)


def test_drop_layers_the_llm_lacks_are_refused_at_attach(model):
    with pytest.raises(ValueError, match="decoder layers"):
        model.compressor = build_compressor("fastv")  # K = 2 on a 2-layer LLM
    with pytest.raises(ValueError, match="decoder layers"):
        model.compressor = build_compressor("globalcom2+sparsevlm")


def test_beam_search_is_refused_with_a_reason(tiny, model):
    tok, _, proc, _ = tiny
    with pytest.raises(ValueError, match="beam search"):
        generate(tok, model, proc, build_compressor("fastv", k=1), num_beams=2)
