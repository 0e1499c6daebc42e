"""llava.hf on LLaVA-OneVision: the anyres_max_9 geometry (and its shrink) exactly as the host
lays it out, selection on the tokens the LLM sees, multi-image prompts, the real 27×27 views."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import host_image_tokens, process, random_image

import llava.hf
from llava.compression import AnyResLayout, build_compressor
from llava.compression.layout import visible_cells
from llava.hf.onevision import shrunk_shape
from llava.testing.tiny_hf import llava_prompt


def test_layout_counts_equal_the_host_processors_for_many_sizes(hf_onevision):
    model, processor = hf_onevision
    adapter = llava.hf.adapter_for(model)
    shrunk = 0
    for h in range(40, 1400, 97):
        for w in range(30, 1400, 89):
            layout = adapter.layout_for_size((h, w))
            assert layout.num_tokens() == processor._get_number_of_features(h, w, 112, 112), (h, w)
            shrunk += layout.shrink is not None
    assert 50 < shrunk < 200  # both regimes are covered


def test_shrink_rule():
    # 6×6 crops of 8×8 tokens: a 48×48 canvas, 4× the 9-crop budget → ratio 2
    assert shrunk_shape(48, 48, 8, 9) == (24, 24)
    # ratio ≤ 1.1 keeps the canvas: 3×3 crops and 26×26 (ratio 1.08)
    assert shrunk_shape(24, 24, 8, 9) is None and shrunk_shape(26, 26, 8, 9) is None
    assert shrunk_shape(27, 27, 8, 9) == (24, 24)  # ratio 1.125: ⌊27/1.125⌋


@pytest.mark.parametrize("sizes,per_prompt", [
    ([(500, 300)], 1),  # no shrink
    ([(1000, 1000)], 1),  # 6×6 crops, shrunk to 24×24
    ([(700, 260), (260, 700)], 2),  # a multi-image prompt: single views
])
def test_keep_all_tokens_are_the_hosts_bit_for_bit(hf_onevision, sizes, per_prompt):
    model, processor = hf_onevision
    inputs = process(model, processor, sizes, images_per_prompt=per_prompt)
    adapter = llava.hf.adapter_for(model)
    with torch.no_grad():
        records = adapter.encode_images(build_compressor("none"), inputs)
    host = host_image_tokens(model, inputs)
    for rec, want in zip(records, host):
        assert torch.equal(rec.tokens, want)
        assert rec.layout.num_tokens() == want.shape[0]
    if per_prompt > 1:
        assert all(rec.layout.n_crops == 0 and rec.layout.num_tokens() == 65 for rec in records)
    if sizes == [(1000, 1000)]:
        assert records[0].layout.shrink == (24, 24) and records[0].info()["canvas"] == [24, 24]


@pytest.mark.parametrize("comp", [
    build_compressor("globalcom2", retention_ratio=0.25),
    build_compressor("globalcom2", retention_ratio=0.1, score="attn_received", budget="exact"),
    build_compressor("fastervlm", retention_ratio=0.3),
], ids=["globalcom2", "attn_received-exact", "fastervlm"])
def test_compressed_tokens_are_the_hosts_at_the_kept_positions(hf_onevision, comp):
    """Selection acts on the tokens the LLM sees: every packed token is the host's token at
    its ``kept`` position — shrunk canvas, newlines and multi-image prompts included."""
    model, processor = hf_onevision
    inputs = process(model, processor, [(1000, 1000), (500, 300), (700, 260), (260, 700)], images_per_prompt=1)
    multi = process(model, processor, [(700, 260), (260, 700)], images_per_prompt=2)
    for batch in (inputs, multi):
        with torch.no_grad():
            _, records = llava.hf.prepare_inputs(model, comp, **batch)
        for rec, full in zip(records, host_image_tokens(model, batch)):
            assert torch.equal(rec.tokens, full[rec.kept])
            n = rec.layout.tokens_per_view
            assert int(rec.selection.thumb_keep.sum()) == int(n * comp.retention_ratio)


def test_crop_regions_of_a_shrunk_canvas():
    """Each cell of the shrunk canvas belongs to the crop of the canvas cell nearest its sample
    point; crop token counts N_j add up to the shrunk canvas."""
    lay = AnyResLayout(3, 2, 8, 0, 16, 2, 22, shrink=(11, 14))
    cells = visible_cells(lay, torch.device("cpu"))  # [11, 14] → j·N + t
    rows = [(2 * i + 1) * 16 // 22 for i in range(11)]
    cols = [2 + (2 * j + 1) * 20 // 28 for j in range(14)]
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            crop, t = divmod(int(cells[i, j]), 64)
            assert crop == (r // 8) * 3 + c // 8 and t == (r % 8) * 8 + c % 8
    assert cells.unique().numel() == 11 * 14
    from llava.compression.functional import crop_token_counts

    assert int(crop_token_counts(lay, torch.device("cpu")).sum()) == 11 * 14


def test_real_siglip_geometry_27x27():
    """The real 384-px SigLIP views: 729 tokens, GlobalCom² keeps ⌊729·R⌋ of the thumbnail."""
    from llava.testing.tiny_hf import tiny_onevision

    model, processor = tiny_onevision(image_size=384)
    inputs = processor(images=[random_image(800, 500)], text=[llava_prompt("What?")], return_tensors="pt")
    comp = build_compressor("globalcom2", retention_ratio=0.25)
    with torch.no_grad():
        kwargs, records = llava.hf.prepare_inputs(model, comp, **inputs)
        logits = model(**kwargs).logits
    info = records[0].info()
    assert records[0].layout.tokens_per_view == 729 and info["thumbnail_kept"] == 182
    assert info["tokens_uncompressed"] == int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert logits.shape[1] == kwargs["input_ids"].shape[1] and torch.isfinite(logits).all()
