"""Video files and settings: a tiny video written with PyAV and read back (uniform sampling by
each family's rule, clear errors), the video processor's settings read as transformers reads
them, a saved checkpoint loaded without torchvision, and the run_video CLI on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hf_helpers import write_video

from llava.hf.processors import load_processor
from llava.hf.video import VideoProcessor, read_video

FRAMES, W, H = 12, 64, 48


def grey(i: int) -> int:
    return 10 + 20 * i


@pytest.fixture(scope="session")
def clip_file(tmp_path_factory) -> str:
    """12 frames at 6 fps, frame i a flat grey of level 10 + 20·i (so a frame names its index)."""
    frames = np.stack([np.full((H, W, 3), grey(i), np.uint8) for i in range(FRAMES)])
    return write_video(str(tmp_path_factory.mktemp("video") / "clip.mp4"), frames, fps=6)


def levels(frames: np.ndarray) -> list[int]:
    """Which frame each decoded frame is (nearest grey level; the codec is lossy)."""
    return [int(round((float(f.mean()) - 10) / 20)) for f in frames]


def test_read_video_samples_uniformly(clip_file):
    frames, meta = read_video(clip_file, num_frames=4)
    assert frames.shape == (4, H, W, 3) and frames.dtype == np.uint8
    assert meta.total_num_frames == FRAMES and meta.fps == pytest.approx(6.0) and meta.video_backend == "pyav"
    assert meta.frames_indices == [0, 3, 6, 9] == levels(frames)  # arange(n)·total // n
    every, meta = read_video(clip_file)
    assert levels(every) == list(range(FRAMES)) and meta.sampled_fps == pytest.approx(6.0)
    half, meta = read_video(clip_file, fps=3)  # 3 frames a second of a 2-second clip
    assert meta.frames_indices == [0, 2, 4, 6, 8, 10] == levels(half)
    # Qwen's rule: round the count to its temporal patch (2, Python's round: 5 → 4, 7 → 8),
    # indices arange(0, total, total / n)
    qwen = VideoProcessor("qwen2_vl")
    for asked, want in [(5, [0, 3, 6, 9]), (7, [0, 1, 3, 4, 6, 7, 9, 10])]:
        frames, meta = read_video(clip_file, sample_indices_fn=lambda metadata, n=asked: qwen.sample_frames(
            metadata, num_frames=n))
        assert meta.frames_indices == want == levels(frames)


def test_unreadable_and_missing_files_are_clear_errors(tmp_path, clip_file):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video")
    with pytest.raises(ValueError, match=f"cannot read video '{bad}'"):
        read_video(bad, num_frames=2)
    with pytest.raises(FileNotFoundError, match="video file '.*missing.mp4' not found"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="num_frames=20.*exceeds total_num_frames=12"):
        read_video(clip_file, num_frames=20)


def test_settings_are_read_as_transformers_reads_them(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "Qwen2VLImageProcessor", "min_pixels": 3136, "max_pixels": 50176, "patch_size": 14}))
    vp = VideoProcessor.from_pretrained(tmp_path)
    assert vp.family == "qwen2_vl" and vp.size == {"shortest_edge": 3136, "longest_edge": 50176}
    assert vp.temporal_patch_size == 2 and vp.min_frames == 4  # class defaults for what the file omits
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(
        {"video_processor_type": "Qwen2VLVideoProcessor", "size": {"shortest_edge": 100352, "longest_edge": 602112}}))
    assert VideoProcessor.from_pretrained(tmp_path).size == {"shortest_edge": 100352, "longest_edge": 602112}
    (tmp_path / "processor_config.json").write_text(json.dumps(
        {"processor_class": "LlavaOnevisionProcessor",
         "video_processor": {"video_processor_type": "LlavaOnevisionVideoProcessor", "image_mean": [0.5, 0.5, 0.5]}}))
    vp = VideoProcessor.from_pretrained(tmp_path)  # the processor file's entry wins
    assert vp.family == "onevision" and vp.image_mean == [0.5, 0.5, 0.5] and vp.size == {"height": 384, "width": 384}
    with pytest.raises(TypeError, match="does not take colour"):
        VideoProcessor("onevision", colour="red")
    with pytest.raises(ValueError, match="unknown video processor family"):
        VideoProcessor("llava_next")


@pytest.fixture(scope="module")
def qwen_ckpt(hf_qwen2_5_vl, tmp_path_factory) -> str:
    from llava.testing.tiny_hf import save_checkpoint

    return save_checkpoint(*hf_qwen2_5_vl, str(tmp_path_factory.mktemp("qwen25-ckpt")))


def test_a_saved_checkpoint_loads_and_runs_without_torchvision(hf_qwen2_5_vl, qwen_ckpt, tmp_path, clip_file):
    from llava.eval import run_video

    model, processor = hf_qwen2_5_vl
    path = qwen_ckpt
    loaded = load_processor(path)
    assert type(loaded).__name__ == "ImageOnlyQwen2_5_VLProcessor"
    assert loaded.video_processor.size == processor.video_processor.size
    frames, meta = read_video(clip_file, num_frames=4)
    kw = dict(videos=[frames], video_metadata=[meta], text=["<|vision_start|><|video_pad|><|vision_end|>Hi"],
              return_tensors="pt")
    a, b = loaded(**kw), processor(**kw)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["second_per_grid_ts"].tolist() == [pytest.approx(2 / (4 / 12 * 6))]  # 2 frames / sampled fps

    stats = tmp_path / "stats.json"
    text = run_video.main(["--model-path", path, "--video-file", clip_file, "--query", "What happens?",
                           "--num-frames", "8", "--compression", "globalcom2", "--retention-ratio", "0.3",
                           "--max-new-tokens", "3", "--stats", "--stats-json", str(stats)])
    report = json.loads(stats.read_text())
    assert isinstance(text, str) and report["video"]["frame_indices"] == [0, 1, 3, 4, 6, 7, 9, 10]
    info = report["records"][0]
    assert info["frames"] == 4 and len(info["budgets"]) == 4 and info["tokens"] == sum(info["frame_kept"])
    assert report["compression"]["name"] == "globalcom2" and report["new_tokens"] <= 3
    with pytest.raises(SystemExit, match="error: cannot read video"):
        run_video.main(["--model-path", path, "--video-file", str(tmp_path / "stats.json"), "--query", "?"])
    assert report["compression"]["score"] == "neg_cos"  # what runs on Qwen's CLS-free tower
    if not torch.cuda.is_available():  # never a silent fall-back to the CPU
        with pytest.raises(SystemExit, match="CUDA is not available"):
            run_video.main(["--model-path", path, "--video-file", clip_file, "--query", "?", "--device", "cuda"])


def test_visualiser_draws_the_frame_strip(qwen_ckpt, clip_file, tmp_path):
    from PIL import Image

    from llava.analysis import visualize as vis

    out = tmp_path / "strip.png"
    vis.main(["--model-path", qwen_ckpt, "--video-file", clip_file, "--num-frames", "8", "--retention-ratio", "0.3",
              "--out", str(out), "--device", "cpu"])
    # 4 record frames (temporal patches) of 2x2 merged tokens (64x48 px → smart_resize 56x56 → 4x4 patches)
    assert Image.open(out).size == (vis.MARGIN + 4 * (2 * 16 + vis.MARGIN), vis.HEADER + 2 * 16 + 22 + vis.MARGIN)


def test_frame_strip_refuses_in_llm_methods(qwen_ckpt, clip_file, tmp_path):
    """The strip draws what the vision stage keeps; an in-LLM stage would be drawn as 'all kept'."""
    from llava.analysis import visualize as vis

    with pytest.raises(SystemExit, match="fastv prunes inside the LLM"):
        vis.main(["--model-path", qwen_ckpt, "--video-file", clip_file, "--compression", "fastv",
                  "--out", str(tmp_path / "x.png"), "--device", "cpu"])
