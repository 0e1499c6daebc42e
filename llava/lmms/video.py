"""Which frames of a video file the plug-in's video models see, and at what size — by default
the frames lmms-eval's stock models feed the same checkpoints (rules re-derived from lmms-eval
0.7.3 and qwen-vl-utils 0.0.14, which its Qwen models read videos with).

LLaVA-OneVision (lmms-eval's ``llava_hf`` and ``llava_onevision``, ``max_frames_num=32``):
    ``np.linspace(0, total - 1, n, dtype=int)`` — both ends included, positions truncated, frames
    repeated when the file has fewer than ``n`` (:func:`onevision_indices`). The processor resizes
    them (384 × 384 on the real checkpoints).

Qwen2-VL / Qwen2.5-VL (lmms-eval's ``qwen2_vl`` / ``qwen2_5_vl``, ``max_num_frames=32``):
    qwen-vl-utils first samples ``fps`` frames a second (2): ``n = total / video_fps · fps``,
    clamped to [4, min(768, total)] and floored to an even count, at
    ``round(linspace(0, total - 1, n))`` (float32, half to even) (:func:`qwen_sampled_count`);
    lmms-eval then keeps ``unique(linspace(0, n - 1, max_num_frames, dtype=int))`` of those
    (:func:`qwen_indices`). qwen-vl-utils resizes every frame to a multiple of 28 between
    ``min_pixels`` and a cap of ``min(max_pixels, max(min(768·28², 0.9·128000·28² · 2 / n),
    1.05·min_pixels))`` pixels — ``n`` the count it sampled, before lmms-eval's cut, so a long
    video gets smaller frames (:func:`qwen_frame_size`); the processor then leaves them at that size.

Where we differ: frames are decoded with PyAV (lmms-eval uses decord / torchcodec / torchvision)
and Qwen's frames are resized with PIL's bicubic filter to uint8 (qwen-vl-utils: torchvision's
antialiased bicubic, kept as float), so pixel values can differ by a little; the frame indices
and sizes are the same. qwen-vl-utils' ``$MODEL_SEQ_LEN`` (128000) is taken at its default.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: qwen-vl-utils' constants (image_patch_size 14 · spatial merge 2 = 28-pixel factor).
QWEN_FACTOR = 28
QWEN_FPS = 2.0
QWEN_MIN_FRAMES = 4
QWEN_MAX_FRAMES = 768
QWEN_FRAME_FACTOR = 2
QWEN_FRAME_MAX_PIXELS = 768 * 28 * 28
QWEN_TOTAL_PIXELS = 128000 * 28 * 28 * 0.9


@dataclass
class VideoClip:
    """A video as the model's processor gets it: ``frames`` ``[F, H, W, 3]`` uint8 RGB, which
    are the file's frames ``indices`` (of ``total_frames`` at ``fps`` frames a second)."""

    path: str
    frames: np.ndarray
    indices: list[int]
    total_frames: int
    fps: float | None

    def metadata(self) -> dict:
        """transformers' ``video_metadata`` entry of the clip."""
        return {"total_num_frames": self.total_frames, "fps": self.fps, "frames_indices": list(self.indices)}


def read_clip(path: str | os.PathLike, pick: Callable[[int, float | None], list[int]]) -> VideoClip:
    """The frames ``pick(total_frames, fps)`` names, read from ``path`` with PyAV."""
    from llava.hf.video import read_video

    frames, meta = read_video(path, sample_indices_fn=lambda metadata: pick(metadata.total_num_frames, metadata.fps))
    return VideoClip(os.fspath(path), frames, [int(i) for i in meta.frames_indices], int(meta.total_num_frames),
                     meta.fps)


# ----------------------------------------------------------------------------- LLaVA-OneVision


def onevision_indices(total: int, num_frames: int) -> list[int]:
    """lmms-eval's ``load_video``: ``num_frames`` positions from 0 to ``total - 1``, truncated."""
    if total < 1:
        raise ValueError("the video holds no frame")
    return np.linspace(0, total - 1, num_frames, dtype=int).tolist()


# ----------------------------------------------------------------------------- Qwen2-VL / Qwen2.5-VL


def qwen_sampled_count(total: int, video_fps: float | None, fps: float = QWEN_FPS) -> int:
    """How many frames qwen-vl-utils samples at ``fps`` frames a second (its ``smart_nframes``)."""
    if video_fps is None or video_fps <= 0:
        raise ValueError("the video does not state its frame rate, which qwen-vl-utils' fps sampling needs")
    lo = math.ceil(QWEN_MIN_FRAMES / QWEN_FRAME_FACTOR) * QWEN_FRAME_FACTOR
    hi = math.floor(min(QWEN_MAX_FRAMES, total) / QWEN_FRAME_FACTOR) * QWEN_FRAME_FACTOR
    n = min(min(max(total / video_fps * fps, lo), hi), total)
    n = math.floor(n / QWEN_FRAME_FACTOR) * QWEN_FRAME_FACTOR
    if not QWEN_FRAME_FACTOR <= n <= total:
        raise ValueError(f"a video of {total} frame(s) is too short for qwen-vl-utils' sampling "
                         f"(it takes between {QWEN_FRAME_FACTOR} and {total} frames, got {n})")
    return n


def qwen_indices(total: int, video_fps: float | None, max_num_frames: int,
                 fps: float = QWEN_FPS) -> tuple[list[int], int]:
    """The file's frames lmms-eval's Qwen models keep, and how many qwen-vl-utils sampled first
    (which sets the frame size, :func:`qwen_frame_size`)."""
    import torch

    n = qwen_sampled_count(total, video_fps, fps)
    sampled = torch.linspace(0, total - 1, n).round().long().numpy()  # float32, half to even
    keep = np.unique(np.linspace(0, n - 1, max_num_frames, dtype=int))
    return sampled[keep].tolist(), n


def qwen_smart_resize(height: int, width: int, min_pixels: int, max_pixels: float,
                      factor: int = QWEN_FACTOR) -> tuple[int, int]:
    """qwen-vl-utils' ``smart_resize``: both sides multiples of ``factor``, the area within
    [``min_pixels``, ``max_pixels``], the aspect ratio about kept."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"a {width}x{height} frame: the aspect ratio must be below 200")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def qwen_frame_size(height: int, width: int, sampled: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The ``(height, width)`` qwen-vl-utils resizes every frame of a video to, ``sampled`` the
    number of frames it sampled (its per-frame share of the model's context caps the area)."""
    cap = max(min(QWEN_FRAME_MAX_PIXELS, QWEN_TOTAL_PIXELS / sampled * QWEN_FRAME_FACTOR), int(min_pixels * 1.05))
    return qwen_smart_resize(height, width, min_pixels, min(max_pixels, cap))


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[F, H, W, 3]`` uint8 → ``[F, height, width, 3]`` uint8, PIL's bicubic filter frame by
    frame (a frame already at that size is kept as it is)."""
    from PIL import Image

    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in frames])
