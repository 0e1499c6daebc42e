"""Which tokens of a video a compression method keeps: a strip of its frames, dropped tokens
greyed out, each frame labelled with its budget ``r_f`` (GlobalCom², VidCom2) or the fraction
of its tokens kept (the other methods).

:func:`frame_masks` (the per-frame token masks as 2-D maps) and :func:`render_frame_strip` (the
drawing) are plain functions of a video's :class:`llava.compression.CompressedImage` record and
the sampled frames; ``python -m llava.analysis.visualize --video-file`` runs a model and draws it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from .visualize import DROPPED_ALPHA, DROPPED_RGB, HEADER, MARGIN, _font, _shade

LABEL_H = 22


def frame_masks(record) -> torch.Tensor:
    """``[F, rows, cols]`` bool on the CPU: token ``(r, c)`` of frame ``f`` is kept."""
    lay = record.layout
    if not record.is_video:
        raise ValueError("frame_masks draws a video's record; this record is an image's")
    return record.selection.crop_keep.detach().to("cpu", torch.bool).reshape(lay.frames, lay.rows, lay.cols)


def frame_labels(record) -> list[str]:
    """Per frame: ``r_f`` when the method allocates frame budgets, else the kept fraction."""
    sel, n = record.selection, record.layout.tokens_per_frame
    if sel.budgets is not None:
        return [f"r{f + 1} = {100 * float(b):.1f}%" for f, b in enumerate(sel.budgets.detach().cpu().tolist())]
    return [f"kept {100 * k / n:.1f}%" for k in sel.crop_keep.detach().cpu().sum(1).tolist()]


def render_frame_strip(frames, record, cell: int = 16, per_row: int = 8, title: str | None = None,
                       labels: bool = True, frame_indices: list[int] | None = None) -> Image.Image:
    """The strip: every frame of the record resized to its token grid (``cell`` px a token),
    dropped tokens greyed out, ``per_row`` frames a row, each captioned with its label.

    ``frames`` are the sampled frames (``[n, H, W, 3]`` uint8 or PIL images), as given to the
    processor. When a record frame stands for several sampled frames (Qwen's temporal patch of
    two), the first of them is drawn and the caption names them all."""
    lay = record.layout
    frames = [np.asarray(f.convert("RGB") if isinstance(f, Image.Image) else f) for f in frames]
    group = math.ceil(len(frames) / lay.frames)
    if not 1 <= len(frames) <= group * lay.frames or group * (lay.frames - 1) >= len(frames):
        raise ValueError(f"{len(frames)} sampled frames for a record of {lay.frames} frames")
    masks = frame_masks(record).numpy()
    captions = frame_labels(record)
    indices = frame_indices if frame_indices is not None else list(range(len(frames)))
    fw, fh = lay.cols * cell, lay.rows * cell
    cols = min(per_row, lay.frames)
    rows = math.ceil(lay.frames / cols)
    width = MARGIN + cols * (fw + MARGIN)
    height = HEADER + rows * (fh + LABEL_H + MARGIN)
    out = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    small, big = _font(12), _font(15)
    for f in range(lay.frames):
        shown = frames[f * group]
        picture = np.asarray(Image.fromarray(shown).resize((fw, fh)), dtype=np.float32).copy()
        _shade(picture, ~masks[f], DROPPED_RGB, DROPPED_ALPHA, cell)
        x = MARGIN + (f % cols) * (fw + MARGIN)
        y = HEADER + (f // cols) * (fh + LABEL_H + MARGIN)
        out.paste(Image.fromarray(picture.clip(0, 255).astype(np.uint8)), (x, y + LABEL_H))
        span = indices[f * group : (f + 1) * group]
        name = f"#{span[0]}" if len(span) == 1 else f"#{span[0]}–{span[-1]}"
        text = f"{name}  {captions[f]}" if labels else name
        draw.text((x, y + 4), text, fill=(0, 0, 0), font=small)
    if title:
        draw.text((MARGIN, 8), title, fill=(0, 0, 0), font=big)
    return out
