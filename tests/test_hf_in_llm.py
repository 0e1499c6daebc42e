"""In-LLM pruning on transformers' own VLMs (llava.hf): keep-all ≡ the unpatched model,
cached ≡ cache-free decoding, recomputed rows ≡ eager attention (GQA, M-RoPE), and Qwen's
survivors keep their 3-D M-RoPE positions (a masked-key reference)."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import process

import llava.hf
from llava.compression import build_compressor
from llava.model.pruned_stack import _rotary, attention_rows

FAMILIES = ["hf_llava_next", "hf_onevision", "hf_qwen2_vl"]


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_all_is_the_unpatched_model_and_cache_equals_cache_free(family, request):
    model, processor = request.getfixturevalue(family)
    inputs = process(model, processor, [(300, 200), (200, 260)])
    keep_all = build_compressor("fastv", k=1, retention_ratio=1.0)
    kw, records = llava.hf.prepare_inputs(model, keep_all, **inputs)
    with torch.no_grad():
        ref = model(**kw).logits
        with llava.hf.llm_pruning(model, keep_all, kw, records):
            out = model(**kw).logits
    valid = kw["attention_mask"].bool()
    assert torch.equal(out[valid], ref[valid])
    assert [r.llm.tokens_per_layer for r in records] == [[r.index.shape[0]] * 2 for r in records]

    comp = build_compressor("sparsevlm", layers=(0,), retention_ratio=0.2)
    cached, recs = llava.hf.generate(model, comp, **inputs, max_new_tokens=3, do_sample=False, return_records=True)
    free = llava.hf.generate(model, comp, **inputs, max_new_tokens=3, do_sample=False, use_cache=False)
    assert torch.equal(cached, free)
    for r in recs:
        n = r.index.shape[0]
        assert r.llm.tokens_per_layer[0] == n and r.llm.tokens_per_layer[1] < n


def _eager_rows(base, embeds, mask, pos, rows):
    try:
        base.set_attn_implementation("eager")
        with torch.no_grad():
            out = base(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, output_attentions=True,
                       output_hidden_states=True, use_cache=False)
    finally:
        base.set_attn_implementation("sdpa")
    return out


@pytest.mark.parametrize("family", ["hf_llava_next", "hf_qwen2_vl"])
def test_attention_rows_equal_eager_with_gqa_and_mrope(family, request):
    model, _ = request.getfixturevalue(family)
    base = model.model.language_model
    torch.manual_seed(1)
    B, L = 2, 19
    embeds = torch.randn(B, L, base.config.hidden_size)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[0, :3] = 0
    text = (mask.cumsum(1) - 1).clamp_min(0)
    if family == "hf_qwen2_vl":  # 3 different rows, as an image's (t, h, w) grid gives
        pos = torch.stack([text, text + (torch.arange(L) % 3), text * 2 % 7])
    else:
        pos = text
    out = _eager_rows(base, embeds, mask, pos, None)
    cos, sin = _rotary(base, embeds, pos, 0)
    rows = torch.tensor([[L - 1, 10], [L - 1, 4]])
    for i, layer in enumerate(base.layers):
        got = attention_rows(layer, out.hidden_states[i], cos, sin, rows, mask.bool())
        want = out.attentions[i].float().mean(1).gather(1, rows[:, :, None].expand(B, 2, L))
        assert torch.allclose(got, want, atol=1e-6)


def test_qwen_survivors_keep_their_mrope_positions(hf_qwen2_vl):
    """FastV on Qwen2-VL: the survivors' logits equal the unpruned language model run with
    the dropped tokens hidden as keys from layer K on — same 3-D positions, same text after."""
    model, processor = hf_qwen2_vl
    inputs = process(model, processor, [(280, 196)])
    comp = build_compressor("fastv", k=1, retention_ratio=0.3)
    kw, records = llava.hf.prepare_inputs(model, comp, **inputs)
    lm = model.model.language_model
    seen = {}
    hook = lm.register_forward_pre_hook(lambda m, a, k: seen.update(k), with_kwargs=True)
    try:
        with torch.no_grad(), llava.hf.llm_pruning(model, comp, kw, records):
            logits = model(**kw).logits
    finally:
        hook.remove()
    embeds, pos = seen["inputs_embeds"], seen["position_ids"]
    pos = pos[1:] if pos.shape[0] == 4 else pos
    ids = kw["input_ids"][0]
    img = (ids == model.config.image_token_id).nonzero().flatten()
    dropped = torch.zeros(ids.shape[0], dtype=torch.bool)
    dropped[img] = True
    dropped[img[records[0].llm.kept]] = False
    assert int((~dropped[img]).sum()) == round(0.3 * img.numel())
    L = ids.shape[0]
    cos, sin = lm.rotary_emb(embeds, pos)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    h = embeds
    with torch.no_grad():
        for i, layer in enumerate(lm.layers):
            allowed = causal & ~dropped[None, :] if i >= 1 else causal
            bias = torch.zeros(1, 1, L, L).masked_fill(~allowed, float("-inf"))
            h = layer(h, attention_mask=bias, position_embeddings=(cos, sin), position_ids=None, cache=None,
                      use_cache=False)
        ref = model.lm_head(lm.norm(h))
    assert torch.allclose(logits[0, ~dropped], ref[0, ~dropped], atol=1e-4)


def test_llm_pruning_checks_its_inputs_and_install_refuses_in_llm_methods(hf_llava_next):
    model, processor = hf_llava_next
    inputs = process(model, processor, [(300, 200)])
    comp = build_compressor("fastv", k=1)
    kw, records = llava.hf.prepare_inputs(model, comp, **inputs)
    with pytest.raises(ValueError, match="image tokens"):
        with llava.hf.llm_pruning(model, comp, kw, records[:0]):
            pass
    with pytest.raises(ValueError, match="decoder layers"):
        with llava.hf.llm_pruning(model, build_compressor("fastv", k=2), kw, records):
            pass
    with pytest.raises(ValueError, match="inside the LLM"):
        llava.hf.install(model, processor, build_compressor("globalcom2+fastv", budget="exact", k=1))
    assert "forward" not in model.model.language_model.__dict__


def test_video_and_image_tokens_are_pruned_together_on_qwen(hf_qwen2_vl):
    """A prompt with an image and a video: both runs are visual tokens of the in-LLM stage, each
    record gets its own counts, and cached decoding equals recomputing the pruned prefill."""
    from hf_helpers import process_videos, random_clip, random_image

    model, processor = hf_qwen2_vl
    inputs = process_videos(model, processor, [random_clip(4, seed=1)], images=[[random_image(160, 120, seed=2)]])
    comp = build_compressor("fastv", k=1, retention_ratio=0.25)
    cached, recs = llava.hf.generate(model, comp, **inputs, max_new_tokens=3, do_sample=False, return_records=True)
    free = llava.hf.generate(model, comp, **inputs, max_new_tokens=3, do_sample=False, use_cache=False)
    assert torch.equal(cached, free)
    assert [r.is_video for r in recs] == [False, True]
    total = sum(r.index.shape[0] for r in recs)
    assert sum(r.llm.tokens_per_layer[1] for r in recs) == round(0.25 * total)
    assert all(r.llm.tokens_per_layer[0] == r.index.shape[0] for r in recs)
