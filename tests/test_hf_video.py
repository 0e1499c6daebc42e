"""llava.hf on videos (tiny random LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL): inputs laid out as
the host expects them and as the image path lays out the same pixels, keep-all ≡ unpatched, the
Qwen survivors' full-grid M-RoPE positions (with Qwen2.5-VL's temporal scaling) against the
unpatched model on the masked full sequence, batch ≡ singles, records, install."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import (
    masked_full_reference,
    new_tokens,
    process_videos,
    random_clip,
    random_image,
    video_prompt_for,
)

import llava.hf
from llava.compression import build_compressor

FAMILIES = ["hf_onevision", "hf_qwen2_vl", "hf_qwen2_5_vl"]
QWEN = ["hf_qwen2_vl", "hf_qwen2_5_vl"]


@pytest.fixture(params=FAMILIES)
def family(request):
    model, processor = request.getfixturevalue(request.param)
    return request.param, model, processor


def host_video_tokens(model, inputs) -> torch.Tensor:
    """What the unpatched model puts into the video placeholder runs (its own get_video_features)."""
    keys = ("pixel_values_videos", "video_grid_thw")
    with torch.no_grad():
        out = type(model.model).get_video_features(model.model, **{k: inputs[k] for k in keys if k in inputs})
    pooled = out.pooler_output
    return torch.cat(list(pooled)) if isinstance(pooled, (tuple, list)) else pooled.flatten(0, 1)


def test_video_inputs_are_the_image_path_and_the_hosts_layout(family):
    name, model, processor = family
    image = random_image(200, 150, seed=4)
    img = processor(images=[image], text=[video_prompt_for(model, "Hi", images=1, videos=0)], return_tensors="pt")
    vid = processor(videos=[[image] * 4], text=[video_prompt_for(model, "Hi")], return_tensors="pt")
    video_id = model.config.video_token_id
    n_video = int((vid["input_ids"] == video_id).sum())
    assert n_video == host_video_tokens(model, vid).shape[0]  # placeholders = what the host produces
    if "qwen" in name:
        # four identical frames = two temporal patches, each exactly the image's patches
        assert vid["video_grid_thw"].tolist() == [[2, *img["image_grid_thw"][0, 1:].tolist()]]
        half = vid["pixel_values_videos"].shape[0] // 2
        assert torch.equal(vid["pixel_values_videos"][:half], img["pixel_values"])
        assert torch.equal(vid["pixel_values_videos"][half:], img["pixel_values"])
        assert n_video == 2 * int((img["input_ids"] == model.config.image_token_id).sum())
        assert vid["mm_token_type_ids"][vid["input_ids"] == video_id].eq(2).all()
        assert ("second_per_grid_ts" in vid) == (name == "hf_qwen2_5_vl")
    else:
        # every frame = the image's base view; 4 frames of ⌈side/2⌉² pooled tokens + one newline
        assert vid["pixel_values_videos"].shape == (1, 4, *img["pixel_values"].shape[2:])
        assert torch.equal(vid["pixel_values_videos"][0, 2], img["pixel_values"][0, 0])
        assert n_video == 4 * 4 * 4 + 1


def keep_all(name: str):
    return build_compressor("fastervlm", retention_ratio=1.0) if "qwen" in name else build_compressor(
        "globalcom2", retention_ratio=1.0, allocation="uniform")


def test_keep_all_equals_the_unpatched_model_on_image_and_video_prompts(family):
    name, model, processor = family
    inputs = process_videos(model, processor, [random_clip(4, seed=1)], images=[[random_image(160, 120, seed=2)]])
    with torch.no_grad():
        base = model(**inputs).logits
        for comp in (None, build_compressor("none"), keep_all(name)):
            kwargs, records = llava.hf.prepare_inputs(model, comp, **inputs)
            assert [r.is_video for r in records] == [False, True]  # images first, then videos
            video = records[1]
            assert torch.equal(video.kept, torch.arange(video.layout.num_tokens()))
            out = model(**kwargs).logits
            if comp is None or comp.name == "none":
                assert torch.equal(out, base)
            assert out.shape == base.shape and (out - base).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", QWEN)
@pytest.mark.parametrize("method", ["globalcom2", "evs"])
def test_compressed_video_equals_the_masked_full_sequence(request, name, method):
    model, processor = request.getfixturevalue(name)
    comp = build_compressor(method, retention_ratio=0.3)
    clips = [random_clip(6, 120, 90, seed=5), random_clip(4, 90, 150, seed=6)]
    inputs = process_videos(model, processor, clips, questions=["What moves here?", "Colour?"],
                            images=[[random_image(150, 100, seed=7)], []])
    pixels = {k: inputs[k] for k in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")}
    with torch.no_grad():
        kwargs, records = llava.hf.prepare_inputs(model, comp, **inputs)
        ours = model(**kwargs).logits
        mask, positions = masked_full_reference(model, inputs, records)
        ref = model(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=positions, **pixels).logits
    if name == "hf_qwen2_5_vl":  # the temporal positions are scaled: 4 tokens/s × 2 s per temporal patch
        assert inputs["second_per_grid_ts"].tolist() == [2.0, 2.0]
        t0 = positions[0, 1][inputs["input_ids"][1] == model.config.video_token_id]
        assert sorted(set((t0 - t0.min()).tolist())) == [0, 8]
    for b in range(2):
        got, want = ours[b][kwargs["attention_mask"][b].bool()], ref[b][mask[b].bool()]
        assert got.shape == want.shape and (got - want).abs().max().item() <= 1e-4
        assert torch.equal(kwargs["position_ids"][1:, b][:, kwargs["attention_mask"][b].bool()],
                           positions[:, b][:, mask[b].bool()])
    gen = dict(max_new_tokens=4, do_sample=False)
    out = model.generate(**kwargs, **gen)
    ref_out = model.generate(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=positions,
                             mm_token_type_ids=inputs["mm_token_type_ids"], **pixels, **gen)
    eos = model.generation_config.eos_token_id
    assert new_tokens(out, kwargs["input_ids"].shape[1], eos) == new_tokens(ref_out, inputs["input_ids"].shape[1], eos)


@pytest.mark.parametrize("name", ["hf_onevision", "hf_qwen2_5_vl"])
def test_batch_of_videos_equals_single_runs(request, name):
    model, processor = request.getfixturevalue(name)
    comp = build_compressor("globalcom2", retention_ratio=0.3)
    clips = [random_clip(4, seed=8), random_clip(4, seed=9)]
    questions = ["What happens?", "Describe the whole video in detail."]
    gen = dict(max_new_tokens=3, do_sample=False)
    eos = model.generation_config.eos_token_id
    with torch.no_grad():
        batch = process_videos(model, processor, clips, questions)
        kwargs, records = llava.hf.prepare_inputs(model, comp, **batch)
        logits = model(**kwargs).logits[:, -1]
        out = llava.hf.generate(model, comp, **batch, **gen)
        for i in range(2):
            one = process_videos(model, processor, clips[i : i + 1], questions[i : i + 1])
            kw1, rec1 = llava.hf.prepare_inputs(model, comp, **one)
            assert torch.equal(rec1[0].kept, records[i].kept)
            assert rec1[0].selection.budgets.tolist() == pytest.approx(records[i].selection.budgets.tolist(), abs=1e-6)
            torch.testing.assert_close(model(**kw1).logits[0, -1], logits[i], atol=1e-4, rtol=1e-4)
            single = llava.hf.generate(model, comp, **one, **gen)
            L1, L = one["input_ids"].shape[1], batch["input_ids"].shape[1]
            assert new_tokens(single, L1, eos)[0] == new_tokens(out[i : i + 1], L, eos)[0]


def test_one_record_per_video_with_frame_budgets_and_the_hosts_tokens(family):
    name, model, processor = family
    clips = [random_clip(6, seed=10), random_clip(6, seed=11)]
    texts = [video_prompt_for(model, "Compare the two videos.", videos=2)]
    inputs = processor(videos=clips, text=texts, return_tensors="pt")
    full = host_video_tokens(model, inputs)
    with torch.no_grad():
        _, records = llava.hf.prepare_inputs(model, build_compressor("globalcom2", retention_ratio=0.25), **inputs)
    assert len(records) == 2 and all(r.is_video for r in records)
    start = 0
    for rec in records:
        info = rec.info()
        frames = 6 if name == "hf_onevision" else 3  # Qwen: a frame is a temporal patch of two
        assert info["frames"] == frames and len(info["budgets"]) == frames
        n = rec.layout.tokens_per_frame
        assert info["frame_kept"] == [int(n * b) for b in info["budgets"]]
        assert torch.equal(rec.tokens, full[start : start + rec.layout.num_tokens()][rec.kept])
        if name == "hf_onevision":
            assert int(rec.kept[-1]) == rec.layout.num_tokens() - 1  # the trailing newline stays
        start += rec.layout.num_tokens()


@pytest.mark.parametrize("name", ["hf_onevision", "hf_qwen2_5_vl"])
def test_install_sizes_video_placeholders_and_stock_generate_follows(request, name):
    model, processor = request.getfixturevalue(name)
    comp = build_compressor("globalcom2", retention_ratio=0.25, budget="exact")
    clips = [random_clip(4, seed=12), random_clip(4, seed=13)]
    gen = dict(max_new_tokens=4, do_sample=False)
    full = process_videos(model, processor, clips, images=[[random_image(140, 100, seed=14)], []])
    with torch.no_grad():
        ours = llava.hf.generate(model, comp, **full, **gen)
    adapter = llava.hf.adapter_for(model)
    llava.hf.install(model, processor, comp)
    try:
        short = process_videos(model, processor, clips, images=[[random_image(140, 100, seed=14)], []])
        video_id = model.config.video_token_id
        for b in range(2):
            lay = adapter.video_layouts(full)[b]
            assert int((short["input_ids"][b] == video_id).sum()) == int(0.25 * lay.frame_tokens) + int(lay.newline)
        with torch.no_grad():
            stock = model.generate(**short, **gen)
    finally:
        llava.hf.uninstall(model, processor)
    assert "replace_video_token" not in vars(processor) and "get_video_features" not in vars(model.model)
    assert torch.equal(stock[:, short["input_ids"].shape[1] :], ours[:, full["input_ids"].shape[1] :])
    if name == "hf_onevision":  # adaptive budgets: refused at install (images) ...
        with pytest.raises(ValueError, match="budget='exact'"):
            llava.hf.install(model, processor, build_compressor("globalcom2", retention_ratio=0.25))
        return
    llava.hf.install(model, processor, build_compressor("globalcom2", retention_ratio=0.25))
    try:  # ... or, where images have fixed counts (Qwen), when a video is to be sized
        with pytest.raises(ValueError, match="budget='exact'"):
            process_videos(model, processor, clips[:1])
    finally:
        llava.hf.uninstall(model, processor)
