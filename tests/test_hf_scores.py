"""attn_received against independent references: the host's own eager attention maps (CLIP,
SigLIP), and for Qwen's vision blocks a dense masked attention that must reproduce the block's
own output — so queries, keys, rotary embedding and segments (images, Qwen2.5-VL windows) are
the block's."""

from __future__ import annotations

import copy

import pytest
import torch
from hf_helpers import process

import llava.hf
from llava.compression.scoring import layer_received_attention, received_attention
from llava.hf.llava_next import encoder_layers
from llava.hf.qwen2_vl import _capture_received


def test_received_attention_in_chunks_equals_the_dense_column_sums():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 2, 37, 8, generator=g), torch.randn(3, 2, 37, 8, generator=g)
    dense = (q @ k.transpose(-1, -2) * 0.3).softmax(-1).sum(2).mean(1)
    torch.testing.assert_close(received_attention(q, k, 0.3, max_elements=100), dense)
    torch.testing.assert_close(received_attention(q, k, 0.3).sum(-1), torch.full((3,), 37.0))


@pytest.mark.parametrize("name", ["hf_llava_next", "hf_onevision"])
def test_received_attention_equals_the_towers_eager_attention_maps(request, name):
    model, processor = request.getfixturevalue(name)
    inputs = process(model, processor, [(500, 300)])
    tower = copy.deepcopy(model.model.vision_tower)
    tower.config._attn_implementation = "eager"
    pixels = inputs["pixel_values"][0]
    with torch.no_grad():
        out = tower(pixels, output_hidden_states=True, output_attentions=True, return_dict=True)
        layers = encoder_layers(tower)
        for i in (len(layers) - 1, 0):
            ours = layer_received_attention(layers[i], out.hidden_states[i])
            ref = out.attentions[i].float().sum(2).mean(1)  # [V, H, T, T] → column sums, head mean
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["hf_qwen2_vl", "hf_qwen2_5_vl"])
def test_qwen_block_received_attention_is_the_blocks_own_attention(request, name):
    model, processor = request.getfixturevalue(name)
    inputs = process(model, processor, [(300, 200), (90, 140)])
    visual = model.model.visual
    for index in range(len(visual.blocks)):  # Qwen2.5-VL: blocks 0, 2 windowed; 1, 3 full
        block = visual.blocks[index]
        seen: dict = {}
        captured: dict = {}

        def grab(module, args, kwargs, seen=seen):
            seen.update(hidden=args[0], cu=kwargs["cu_seqlens"], rope=kwargs["position_embeddings"])

        def out_hook(module, args, output, seen=seen):
            seen["attn_out"] = output

        h1 = block.register_forward_pre_hook(grab, with_kwargs=True)
        h2 = block.attn.register_forward_hook(out_hook)
        try:
            with torch.no_grad(), _capture_received(block, captured):
                visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
        finally:
            h1.remove()
            h2.remove()
        probs, out = _dense_attention(block, seen["hidden"], seen["cu"], seen["rope"])
        torch.testing.assert_close(out, seen["attn_out"], atol=1e-5, rtol=1e-5)  # the block's own attention
        torch.testing.assert_close(captured["received"], probs.sum(1).mean(0), atol=1e-5, rtol=1e-5)
        segments = seen["cu"].numel() - 1
        if name == "hf_qwen2_5_vl" and index in (0, 2):
            assert segments > 2  # windows, not just the two images


def _dense_attention(block, hidden, cu_seqlens, rope):
    """softmax(q·kᵀ/√d) over ALL patches with a block-diagonal mask, then the block's output."""
    import sys

    attn = block.attn
    P = hidden.shape[0]
    qkv = attn.qkv(block.norm1(hidden)).reshape(P, 3, attn.num_heads, -1).permute(1, 0, 2, 3)
    rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision
    q, k = rotate(qkv[0], qkv[1], *rope)
    v = qkv[2]
    seg = torch.repeat_interleave(torch.arange(cu_seqlens.numel() - 1), (cu_seqlens[1:] - cu_seqlens[:-1]).long())
    logits = torch.einsum("phd,qhd->hpq", q.float(), k.float()) * attn.scaling
    logits = logits.masked_fill(seg[:, None] != seg[None, :], float("-inf"))
    probs = logits.softmax(-1)  # [H, P, P]
    out = torch.einsum("hpq,qhd->phd", probs, v.float()).reshape(P, -1)
    return probs, attn.proj(out.to(hidden.dtype))


def test_qwen_scores_follow_the_hosts_token_order(hf_qwen2_5_vl):
    """Qwen2.5-VL's tower permutes 2×2 blocks into windows; scores come back in the LLM's
    raster order: a block's neg_cos score is computed from its own four patches."""
    model, processor = hf_qwen2_5_vl
    inputs = process(model, processor, [(300, 200)])
    adapter = llava.hf.adapter_for(model)
    from llava.compression import ScoreRequest

    with torch.no_grad():
        tokens, feats = adapter.vision(inputs["pixel_values"], inputs["image_grid_thw"], ScoreRequest("neg_cos", -1))
        out = model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    order = adapter.unit_order(inputs["image_grid_thw"])
    assert not torch.equal(order, torch.arange(order.numel()))  # the tower does permute
    # The merger applied to our re-ordered blocks gives the host's tokens in the host's order.
    merged = model.model.visual.merger(feats.view(-1, out.last_hidden_state.shape[-1]))
    torch.testing.assert_close(merged, tokens, atol=1e-5, rtol=1e-5)
