"""Videos through the transformers-native plug-in models, in process, on tiny checkpoints: the
frames are those lmms-eval's stock models take (indices and sizes re-derived by hand), the
answers are :func:`llava.hf.generate`'s on those frames (the unpatched model's with
``compression=none``), batches equal singles, images and videos mix, the records carry each
video's frames and per-frame budgets, and what cannot be done is refused by name."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("lmms_eval", reason="lmms-eval is installed by `make lmms` (and `make test`)")

from hf_helpers import new_tokens, random_image  # noqa: E402
from lmms_data import VIDEO_INDICES  # noqa: E402
from lmms_eval.api.instance import Instance  # noqa: E402
from lmms_eval.models.model_utils import gen_metrics  # noqa: E402

import llava.hf  # noqa: E402
from llava.compression import build_compressor  # noqa: E402
from llava.hf.video import read_video  # noqa: E402
from llava.lmms import hf  # noqa: E402
from llava.lmms.video import (  # noqa: E402
    onevision_indices,
    qwen_frame_size,
    qwen_indices,
    qwen_sampled_count,
)

GEN = {"until": [], "max_new_tokens": 4, "temperature": 0, "do_sample": False}
CLASSES = {"llava_onevision_gc2": hf.LlavaOnevisionGC2, "qwen2_vl_gc2": hf.Qwen2VLGC2,
           "qwen2_5_vl_gc2": hf.Qwen2_5_VLGC2}
FEW = {"llava_onevision_gc2": {"max_frames_num": 4}, "qwen2_vl_gc2": {"max_num_frames": 4}}
INDICES = VIDEO_INDICES  # the frames FEW gives, by hand
QWEN_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


# ----------------------------------------------------------------------------- the sampling rules


def test_onevision_frames_are_lmms_evals_linspace():
    assert onevision_indices(24, 4) == [0, 7, 15, 23]
    assert onevision_indices(3, 5) == [0, 0, 1, 1, 2]  # fewer frames than asked: repeated
    assert onevision_indices(24, 32) == [0, 0, 1, 2, 2, 3, 4, 5, 5, 6, 7, 8, 8, 9, 10, 11, 11, 12, 13, 14, 14, 15,
                                         16, 17, 17, 18, 19, 20, 20, 21, 22, 23]
    with pytest.raises(ValueError, match="no frame"):
        onevision_indices(0, 4)


def test_qwen_frames_are_qwen_vl_utils_then_lmms_evals_cut():
    # qwen-vl-utils: total / fps · 2, clamped to [4, min(768, total)], floored to even
    assert qwen_sampled_count(24, 6.0) == 8
    assert qwen_sampled_count(300, 30.0) == 20
    assert qwen_sampled_count(7, 1.0) == 6  # 14 wanted, at most the even count ≤ 7
    assert qwen_sampled_count(3, 30.0) == 2  # at least 4 wanted, but only 3 frames
    assert qwen_sampled_count(100_000, 25.0) == 768
    assert qwen_sampled_count(24, 6.0, fps=1.0) == 4
    with pytest.raises(ValueError, match="too short"):
        qwen_sampled_count(1, 30.0)
    with pytest.raises(ValueError, match="frame rate"):
        qwen_sampled_count(24, None)
    # 8 sampled at round(linspace(0, 23, 8)) = 0 3 7 10 13 16 20 23; lmms-eval keeps 4 of them
    assert qwen_indices(24, 6.0, 4) == ([0, 7, 13, 23], 8)
    assert qwen_indices(24, 6.0, 32) == ([0, 3, 7, 10, 13, 16, 20, 23], 8)  # no repeats: unique
    assert qwen_indices(18, 6.0, 4) == ([0, 3, 10, 17], 6)


def test_qwen_frame_sizes_are_qwen_vl_utils():
    assert qwen_frame_size(84, 112, 8, 3136, 602112) == (84, 112)  # multiples of 28 in range: kept
    assert qwen_frame_size(84, 112, 8, 200704, 1605632) == (392, 532)  # Qwen2.5-VL's min: scaled up
    assert qwen_frame_size(720, 1280, 32, 3136, 602112) == (560, 1008)  # capped at 768 tokens
    # 768 sampled frames: each gets 2/768 of 0.9 · 128000 · 28² pixels = 235200, so smaller frames
    assert qwen_frame_size(720, 1280, 768, 3136, 602112) == (336, 644)
    assert qwen_frame_size(720, 1280, 32, 3136, 100_000) == (224, 420)  # max_pixels below the cap


# ----------------------------------------------------------------------------- in process


def _load(video_checkpoints, name, **args):
    return CLASSES[name](pretrained=video_checkpoints[name], device="cpu", **args)


def _docs(video_media, names, text="What moves?", image=None):
    return [{"text": f"{text} ({i})", "visuals": ([image] if image is not None else []) + [os.path.join(video_media, n)]}
            for i, n in enumerate(names)]


def requests(lm, docs, gen=GEN):
    lm.task_dict = {"t": {"test": docs}}
    return [Instance("generate_until", (d["text"], dict(gen), lambda d: d["visuals"], i, "t", "test"), i,
                     {"task": "t", "doc_id": i, "repeats": 1}) for i, d in enumerate(docs)]


def _frames(path: str, indices: list[int]) -> np.ndarray:
    frames, meta = read_video(path, sample_indices_fn=lambda metadata: indices)
    assert meta.frames_indices == indices
    return frames


@pytest.fixture
def calls(monkeypatch):
    """What the plug-in hands llava.hf.generate, and what it gets back."""
    seen = []
    real = llava.hf.generate

    def spy(model, comp, **kwargs):
        out = real(model, comp, **kwargs)
        seen.append((kwargs, out))
        return out

    monkeypatch.setattr(llava.hf, "generate", spy)
    return seen


def test_prompts(video_checkpoints):
    ov = _load(video_checkpoints, "llava_onevision_gc2")
    assert ov.prompt("Why?", ["image", "video"]) == "<|im_start|>user\n<image>\n<video>\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    qwen = _load(video_checkpoints, "qwen2_vl_gc2")
    assert qwen.prompt("<image>Why?", ["video"]) == (
        f"{QWEN_SYSTEM}<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Why?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("name", sorted(FEW))
def test_video_requests_are_llava_hf_generate_on_the_stock_frames(name, video_checkpoints, video_media, calls):
    """Two videos in one batch: the processor inputs are those of the hand-sampled frames, each
    answer is llava.hf.generate's on its video alone, the record holds its frames and budgets."""
    lm = _load(video_checkpoints, name, compression="globalcom2", retention_ratio=0.25, batch_size=2, **FEW[name])
    eos = lm.model.generation_config.eos_token_id
    assert eos == lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    docs = _docs(video_media, ["clip0.mp4", "clip1.mp4"])
    out = lm.generate_until(requests(lm, docs))
    [(batch_inputs, batch_out)] = calls  # one batch of two
    assert batch_inputs["input_ids"].shape[0] == 2
    batch_new = new_tokens(batch_out[0], batch_inputs["input_ids"].shape[1], eos)
    comp = build_compressor("globalcom2", retention_ratio=0.25)
    for row, r, doc, clip in zip(batch_new, out, docs, ["clip0.mp4", "clip1.mp4"]):
        indices = INDICES[name][clip]
        frames = _frames(doc["visuals"][0], indices)  # Qwen: 84×112 is qwen-vl-utils' size already
        inputs = lm.processor(text=[lm.prompt(doc["text"], ["video"])], videos=[frames], return_tensors="pt")
        with torch.inference_mode():
            ids, records = real_generate(lm.model, comp, inputs)
        assert row == new_tokens(ids, inputs["input_ids"].shape[1], eos)[0]  # the same token ids
        assert r.text == lm.processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()
        counts = r.token_counts.to_dict()
        placeholders = int((inputs["input_ids"] == lm.adapter.token_id("video")).sum())
        assert counts["output_tokens"] == len(row)
        (info,) = counts["videos"]
        assert info == {**records[0].info(), "frame_indices": indices}
        assert counts["visual_tokens_uncompressed"] == placeholders == info["tokens_uncompressed"]
        assert counts["visual_tokens"] == info["tokens"] < 0.35 * placeholders
        assert len(info["budgets"]) == info["frames"] == (4 if name == "llava_onevision_gc2" else 2)
        assert counts["images"] == [] and counts["compression"] == {**comp.to_dict(), "score": "neg_cos"}  # no [CLS]
        assert counts["input_tokens"] == inputs["input_ids"].shape[1] - placeholders + counts["visual_tokens"]
    # the batch's pixels are the two clips' frames as the processor lays them out
    both = lm.processor(text=[lm.prompt(d["text"], ["video"]) for d in docs], padding=True, return_tensors="pt",
                           videos=[_frames(d["visuals"][0], INDICES[name][c])
                                   for d, c in zip(docs, ["clip0.mp4", "clip1.mp4"])])
    assert torch.equal(batch_inputs["input_ids"], both["input_ids"])
    assert torch.equal(batch_inputs["pixel_values_videos"], both["pixel_values_videos"])


def real_generate(model, comp, inputs):
    import llava.hf.core

    return llava.hf.core.generate(model, comp, return_records=True, **inputs, max_new_tokens=4, do_sample=False)


@pytest.mark.parametrize("name", sorted(FEW))
def test_keep_all_is_the_stock_model_with_lmms_evals_defaults(name, video_checkpoints, video_media):
    lm = _load(video_checkpoints, name)
    if name == "llava_onevision_gc2":
        assert lm.max_frames_num == 32
        indices = [0, 0, 1, 2, 2, 3, 4, 5, 5, 6, 7, 8, 8, 9, 10, 11, 11, 12, 13, 14, 14, 15, 16, 17, 17, 18, 19, 20, 20,
                   21, 22, 23]
    else:
        assert (lm.max_num_frames, lm.fps, lm.min_pixels, lm.max_pixels) == (32, 2.0, 3136, 602112)
        indices = [0, 3, 7, 10, 13, 16, 20, 23]
    doc = _docs(video_media, ["clip0.mp4"])[0]
    (r,) = lm.generate_until(requests(lm, [doc]))
    inputs = lm.processor(text=[lm.prompt(doc["text"], ["video"])], videos=[_frames(doc["visuals"][0], indices)],
                          return_tensors="pt")
    with torch.inference_mode():
        ids = lm.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert r.text == lm.processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()
    counts = r.token_counts.to_dict()
    placeholders = int((inputs["input_ids"] == lm.adapter.token_id("video")).sum())
    assert counts["visual_tokens"] == counts["visual_tokens_uncompressed"] == placeholders
    assert counts["videos"][0]["frame_indices"] == indices and counts["compression"] == {"name": "none"}


@pytest.mark.parametrize("name", sorted(FEW))
def test_images_and_videos_mix(name, video_checkpoints, video_media):
    """A picture before a video, and a video-only document: records of each kind, the run's
    figures over both."""
    lm = _load(video_checkpoints, name, compression="globalcom2", retention_ratio=0.25, **FEW[name])
    image = random_image(90, 70, seed=3)
    docs = _docs(video_media, ["clip0.mp4"], "Is it there?", image=image) + _docs(video_media, ["clip1.mp4"])
    gen_metrics.reset_logged_metrics()
    out = lm.generate_until(requests(lm, docs))
    comp = build_compressor("globalcom2", retention_ratio=0.25)
    frames = _frames(docs[0]["visuals"][1], INDICES[name]["clip0.mp4"])
    inputs = lm.processor(text=[lm.prompt(docs[0]["text"], ["image", "video"])], images=[image], videos=[frames],
                          return_tensors="pt")
    with torch.inference_mode():
        ids, records = real_generate(lm.model, comp, inputs)
    assert out[0].text == lm.processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()
    counts = out[0].token_counts.to_dict()
    assert counts["images"] == [records[0].info()] and not records[0].is_video
    assert counts["videos"] == [{**records[1].info(), "frame_indices": INDICES[name]["clip0.mp4"]}]
    assert counts["visual_tokens"] == records[0].info()["tokens"] + records[1].info()["tokens"]
    second = out[1].token_counts.to_dict()
    summary = gen_metrics.summarize_logged_metrics()
    kept = counts["visual_tokens"] + second["visual_tokens"]
    full = counts["visual_tokens_uncompressed"] + second["visual_tokens_uncompressed"]
    assert summary["avg_visual_token_ratio"] == pytest.approx(kept / full)
    assert summary["avg_visual_tokens_per_image"] == counts["images"][0]["tokens"]
    assert summary["avg_visual_tokens_per_video"] == pytest.approx(
        (counts["videos"][0]["tokens"] + second["videos"][0]["tokens"]) / 2)
    assert summary["avg_visual_tokens_uncompressed_per_video"] == pytest.approx(
        (counts["videos"][0]["tokens_uncompressed"] + second["videos"][0]["tokens_uncompressed"]) / 2)


def test_qwen2_5_frame_sizes_and_temporal_positions(video_checkpoints, video_media, calls):
    """lmms-eval's defaults scale the 84×112 frames up to qwen-vl-utils' size for Qwen2.5-VL's
    min_pixels (392×532: 28×38 patches), and the processor keeps that size although its own
    bounds (the tiny checkpoint's) are smaller. lmms-eval's qwen2_5_vl hands the processor bare
    frames (transformers then takes them to be 24 a second: 2/24 s per temporal patch);
    ``video_metadata=True`` gives the clip's rate."""
    docs = _docs(video_media, ["clip0.mp4"])
    for args, grid, seconds in [({}, [2, 28, 38], 2 / 24),
                                ({"min_pixels": 3136, "video_metadata": True}, [2, 6, 8], 2 / (4 / 24 * 6))]:
        lm = _load(video_checkpoints, "qwen2_5_vl_gc2", max_num_frames=4, **args)
        assert (lm.min_pixels, lm.max_pixels) == (args.get("min_pixels", 200704), 1605632)
        (r,) = lm.generate_until(requests(lm, docs))
        kwargs, _ = calls.pop()
        assert kwargs["video_grid_thw"].tolist() == [grid]  # 4 frames → 2 temporal patches
        assert kwargs["second_per_grid_ts"].tolist() == pytest.approx([seconds])
        assert r.token_counts.to_dict()["videos"][0]["tokens_uncompressed"] == grid[0] * grid[1] * grid[2] // 4


def test_refusals(video_checkpoints, video_media, tmp_path):
    ckpt = video_checkpoints["llava_onevision_gc2"]
    for args, message in [({"max_frames_num": 0}, "max_frames_num must be a whole number >= 1, got 0"),
                          ({"max_frames_num": 2.5}, "max_frames_num must be a whole number")]:
        with pytest.raises(ValueError, match=message):
            hf.LlavaOnevisionGC2(pretrained=ckpt, **args)
    qckpt = video_checkpoints["qwen2_vl_gc2"]
    for args, message in [({"fps": 0}, "fps must be a number > 0"),
                          ({"min_pixels": 10_000, "max_pixels": 5_000}, r"min_pixels \(10000\) must not exceed"),
                          ({"max_num_frames": True}, "max_num_frames must be a whole number")]:
        with pytest.raises(ValueError, match=message):
            hf.Qwen2VLGC2(pretrained=qckpt, **args)
    with pytest.raises(ValueError, match="video_metadata must be true or false"):
        hf.Qwen2_5_VLGC2(pretrained=video_checkpoints["qwen2_5_vl_gc2"], video_metadata="yes")
    with pytest.raises(TypeError, match=r"unknown model argument\(s\) max_frames_num"):
        hf.Qwen2VLGC2(pretrained=qckpt, max_frames_num=4)

    # the image-only methods read a [CLS] token, which no video family's tower has: refused at load
    with pytest.raises(ValueError, match="visionzip reads the \\[CLS\\] attention .* has no \\[CLS\\] token"):
        _load(video_checkpoints, "llava_onevision_gc2", compression="visionzip", retention_ratio=0.25)
    # where one would load, a video is refused before any work with the message of llava.hf
    lm = _load(video_checkpoints, "llava_onevision_gc2", max_frames_num=4)
    lm.compressor = build_compressor("visionzip", retention_ratio=0.25)
    try:
        with pytest.raises(NotImplementedError, match="visionzip does not compress videos .*task t, document 0.*"
                                                      "methods for videos: none, globalcom2, fastervlm"):
            lm.generate_until(requests(lm, _docs(video_media, ["clip0.mp4"])))
    finally:
        lm.compressor = None
    # files that are not there or not videos, named with their document
    with pytest.raises(FileNotFoundError, match="task t, document 1: video file .*gone.mp4' not found"):
        lm.generate_until(requests(lm, _docs(video_media, ["clip0.mp4", "gone.mp4"])))
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(ValueError, match="task t, document 0: cannot read video .*text.mp4"):
        lm.generate_until(requests(lm, _docs(str(tmp_path), ["text.mp4"])))
    with pytest.raises(TypeError, match=r"llava_onevision_gc2 takes images and video files; task t, document 0 gave a "
                                        r"dict"):
        lm.generate_until(requests(lm, [{"text": "q", "visuals": [{"array": [0.0]}]}]))
