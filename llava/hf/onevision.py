"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``, e.g.
``llava-hf/llava-onevision-qwen2-7b-ov-hf``).

A SigLIP tower without [CLS] (27×27 = 729 tokens per 384-px view), AnyRes crops, unpadding,
a newline per canvas row — and ``anyres_max_9``: when the unpadded canvas holds more than
1.1² × 9 crops' worth of tokens it is bilinearly shrunk. Selection works on the tokens the LLM
actually sees: the projected canvas is unpadded and shrunk exactly as the host does it, the
per-view scores go through the same unpad and shrink, and each shrunk cell belongs to the crop
of the canvas cell nearest its sample point (:mod:`llava.compression.layout`). Images of a
multi-image prompt are single views (729 tokens + newline), as the host treats them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutputWithPooling

from llava.compression import AnyResLayout, CompressedImage, Compressor, VideoLayout, scatter_visible
from llava.compression.scoring import neg_cos_scores

from .core import register
from .llava_next import LlavaNextAdapter, _as_list


def max_crops(vision_aspect_ratio: str) -> int:
    """``"anyres_max_9"`` → 9, parsed exactly as the host parses it (a character-set strip)."""
    return int(vision_aspect_ratio.strip("anyres_max_"))  # noqa: B005


def shrunk_shape(rows: int, cols: int, side: int, max_num: int) -> tuple[int, int] | None:
    """The host's ``anyres_max`` rule: ``ratio = √(rows·cols / (max_num·side²))``; above 1.1 the
    canvas becomes ``(⌊rows/ratio⌋, ⌊cols/ratio⌋)``, else it stays (``None``)."""
    ratio = math.sqrt(rows * cols / (max_num * side**2))
    if ratio > 1.1:
        return int(rows // ratio), int(cols // ratio)
    return None


def anyres_flags(batch_num_images, n: int) -> list[bool]:
    """Which of the batch's ``n`` images get AnyRes (the host's and the processor's rule):
    every one, unless ``batch_num_images`` says it is one of several images of its sample."""
    if batch_num_images is None:
        return [True] * n
    counts = [int(c) for c in _as_list(batch_num_images)]
    flags = [c == 1 for c in counts for _ in range(c)]
    if len(flags) != n:
        raise ValueError(f"batch_num_images {counts} covers {len(flags)} images, image_sizes {n}")
    return flags


@register
class OnevisionAdapter(LlavaNextAdapter):
    class_names: ClassVar[tuple[str, ...]] = ("LlavaOnevisionForConditionalGeneration",)
    consumed: ClassVar[tuple[str, ...]] = LlavaNextAdapter.consumed + (
        "batch_num_images", "vision_aspect_ratio", "pixel_values_videos", "image_sizes_videos",
    )
    layouts: ClassVar[tuple[str, ...]] = ("faithful",)

    def layout_for_size(self, image_size_hw, aspect: str | None = None) -> AnyResLayout:
        lay = super().layout_for_size(image_size_hw)
        shrink = shrunk_shape(*lay.unpadded_shape, lay.side, max_crops(aspect or self.model.config.vision_aspect_ratio))
        return AnyResLayout(lay.grid_w, lay.grid_h, lay.side, lay.top, lay.bottom, lay.left, lay.right, shrink=shrink)

    def image_layouts(self, inputs: dict[str, Any]) -> list[AnyResLayout]:
        sizes = inputs.get("image_sizes")
        if sizes is None:
            raise ValueError(f"{self.family} needs the processor's image_sizes")
        sizes = sizes.tolist() if isinstance(sizes, torch.Tensor) else [list(s) for s in sizes]
        anyres = anyres_flags(inputs.get("batch_num_images"), len(sizes))
        aspect = self._option(inputs, "vision_aspect_ratio")
        return [self.layout_for_size(s, aspect) if a else AnyResLayout.single_view(self.side) for s, a in zip(sizes, anyres)]

    def processed_layout(self, image_inputs: dict[str, Any], index: int, processor: Any) -> AnyResLayout:
        sizes = image_inputs["image_sizes"]
        if not anyres_flags(image_inputs.get("batch_num_images"), len(sizes))[index]:
            return AnyResLayout.single_view(self.side)
        return self.layout_for_size(_as_list(sizes[index]), getattr(processor, "vision_aspect_ratio", None))

    def encode_images(self, comp: Compressor, inputs: dict[str, Any]) -> list[CompressedImage]:
        layouts = self.image_layouts(inputs)
        pixels = self.view_pixels(inputs["pixel_values"], layouts)
        feats, scores = self.vision(pixels, self.score_request(comp), inputs)
        # The host shrinks *projected* features, so project every view first (as it does).
        tokens = self.inner.multi_modal_projector(feats)  # [V, N, D]
        counts = [lay.n_views for lay in layouts]
        tokens = tokens.split(counts)
        scores = scores.split(counts) if scores is not None else [None] * len(layouts)
        out = []
        with self.image_newline() as newline:
            for t, s, lay in zip(tokens, scores, layouts):
                if lay.n_crops:
                    t = torch.cat([t[:1], scatter_visible(visible_canvas(t[1:], lay), lay)])
                    if s is not None:
                        s = torch.cat([s[:1], scatter_visible(visible_canvas(s[1:, :, None], lay), lay)[..., 0]])
                out.append(comp.compress(t, newline, lay, s))
        return out


    # ------------------------------------------------------------------ videos

    @property
    def pooled_side(self) -> int:
        """Tokens per side of a video frame: the host's bilinear pooling halves the view (⌈side/2⌉)."""
        return math.ceil(self.side / 2)

    def video_layout(self, frames: int) -> VideoLayout:
        return VideoLayout(frames, self.pooled_side, self.pooled_side, newline=True)

    def video_layouts(self, inputs: dict[str, Any]) -> list[VideoLayout]:
        return [self.video_layout(len(v)) for v in _videos(inputs["pixel_values_videos"])]

    def processed_video_layout(self, video_inputs: dict[str, Any], index: int, processor: Any) -> VideoLayout:
        return self.video_layout(len(video_inputs["pixel_values_videos"][index]))

    def encode_videos(self, comp: Compressor, inputs: dict[str, Any]) -> list[CompressedImage]:
        """Frames through the tower, the projector and the host's own pooling (``apply_pooling``)
        → ``[F, N, D]`` per video; ``neg_cos`` scores on those pooled tokens, ``attn_received``
        per patch pooled the same way."""
        videos = _videos(inputs["pixel_values_videos"])
        layouts = [self.video_layout(len(v)) for v in videos]
        request = self.score_request(comp)
        attn = request if request is not None and request.kind == "attn_received" else None
        feats, scores = self.vision(torch.cat(list(videos)), attn, inputs)  # [ΣF, P, C], [ΣF, P]
        tokens = self.inner.apply_pooling(self.inner.multi_modal_projector(feats))  # [ΣF, N, D]
        if request is None:
            scores = None
        elif attn is not None:
            scores = self.inner.apply_pooling(scores[..., None])[..., 0]  # [ΣF, N]
        else:
            scores = neg_cos_scores(tokens)  # −cos(x, frame mean) on the tokens the LLM sees
        counts = [lay.frames for lay in layouts]
        tokens = tokens.split(counts)
        scores = scores.split(counts) if scores is not None else [None] * len(layouts)
        with self.image_newline() as newline:
            return [comp.compress(t, newline, lay, s) for t, s, lay in zip(tokens, scores, layouts)]

    def encoder_output(self, modality: str, records: list[CompressedImage]) -> BaseModelOutputWithPooling:
        if modality != "video":
            return super().encoder_output(modality, records)
        # The host flattens the video output's first two dims: one row holding every video's tokens.
        return BaseModelOutputWithPooling(pooler_output=torch.cat([r.tokens for r in records])[None])


def _videos(pixel_values_videos) -> list[torch.Tensor]:
    """The processor's ``[B, F, C, H, W]`` (or a list of ``[F, C, H, W]``) → one tensor per video."""
    if isinstance(pixel_values_videos, torch.Tensor):
        if pixel_values_videos.dim() != 5:
            raise ValueError(f"pixel_values_videos of shape {tuple(pixel_values_videos.shape)}: expected "
                             "(videos, frames, channels, height, width)")
        return list(pixel_values_videos.unbind(0))
    return [torch.as_tensor(v) for v in pixel_values_videos]


def visible_canvas(crops: torch.Tensor, layout: AnyResLayout) -> torch.Tensor:
    """Crop views ``[n, N, D]`` → the canvas the LLM sees ``[rows, cols, D]``: assembled,
    unpadded and (``layout.shrink``) bilinearly resized with the host's operations, in the
    features' dtype — so at keep-all the tokens equal the host's bit for bit."""
    gh, gw, side = layout.grid_h, layout.grid_w, layout.side
    canvas = crops.view(gh, gw, side, side, -1).permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)  # [D, H, W]
    canvas = canvas[:, layout.top : layout.bottom, layout.left : layout.right]
    if layout.shrink is not None:
        canvas = F.interpolate(canvas[None], list(layout.shrink), mode="bilinear")[0]
    return canvas.permute(1, 2, 0)
