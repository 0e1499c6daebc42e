"""llava.hf on Qwen2-VL and Qwen2.5-VL: the compressed prompt equals the unpatched model run on
the full prompt with the dropped image tokens masked out as keys (same M-RoPE positions)."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import masked_full_reference, new_tokens, process

import llava.hf
from llava.compression import build_compressor

FAMILIES = ["hf_qwen2_vl", "hf_qwen2_5_vl"]
SIZES = [(300, 200), (90, 140), (230, 230)]  # three images of different grids


@pytest.fixture(params=FAMILIES)
def qwen(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("comp_kw", [
    dict(name="globalcom2", retention_ratio=0.25),
    dict(name="fastervlm", retention_ratio=0.4, score="attn_received"),
])
def test_compressed_prompt_equals_masked_full_sequence(qwen, comp_kw):
    model, processor = qwen
    kw = dict(comp_kw)
    comp = build_compressor(kw.pop("name"), **kw)
    inputs = process(model, processor, SIZES)
    with torch.no_grad():
        kwargs, records = llava.hf.prepare_inputs(model, comp, **inputs)
        ours = model(**kwargs).logits
        mask, positions = masked_full_reference(model, inputs, records)
        ref = model(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=positions,
                    pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"]).logits
    for b in range(ours.shape[0]):
        got = ours[b][kwargs["attention_mask"][b].bool()]
        want = ref[b][mask[b].bool()]
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= 1e-4
    # Survivors and the text keep their full-sequence positions.
    for b in range(ours.shape[0]):
        assert torch.equal(kwargs["position_ids"][1:, b][:, kwargs["attention_mask"][b].bool()],
                           positions[:, b][:, mask[b].bool()])
    # Greedy decoding continues from the same positions.
    gen = dict(max_new_tokens=4, do_sample=False)
    out = model.generate(**kwargs, **gen)
    ref_out = model.generate(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=positions,
                             pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"],
                             mm_token_type_ids=inputs["mm_token_type_ids"], **gen)
    eos = model.generation_config.eos_token_id
    L = inputs["input_ids"].shape[1]
    assert new_tokens(out, kwargs["input_ids"].shape[1], eos) == new_tokens(ref_out, L, eos)
