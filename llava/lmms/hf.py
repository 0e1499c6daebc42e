"""The transformers-native models in lmms-eval: our compressors on transformers' own classes
through :mod:`llava.hf` (no patched classes).

=======================  ==========================================  ==========================
lmms-eval model          transformers class                          checkpoints
=======================  ==========================================  ==========================
``llava_hf_gc2``         ``LlavaNextForConditionalGeneration``       ``llava-hf/llava-v1.6-*-hf``
``llava_onevision_gc2``  ``LlavaOnevisionForConditionalGeneration``  ``llava-hf/llava-onevision-*``
``qwen2_vl_gc2``         ``Qwen2VLForConditionalGeneration``         ``Qwen/Qwen2-VL-*``
``qwen2_5_vl_gc2``       ``Qwen2_5_VLForConditionalGeneration``      ``Qwen/Qwen2.5-VL-*``
=======================  ==========================================  ==========================

Model arguments: ``pretrained`` (a local folder with the model and its processor), ``device``,
``device_map``, ``dtype`` (default float16 on CUDA, float32 elsewhere; ``auto`` = the
checkpoint's ``torch_dtype``), ``attn_implementation``, ``batch_size`` (left-padded),
``chat_template`` (a Jinja template, or a file holding one, instead of the processor's) and the
compression arguments of :mod:`llava.lmms.options`. The prompt is the processor's chat template
applied to one user turn — the request's images and videos in the task's order (OneVision's
template puts the images first), then the task's text — as transformers' own pipelines and
lmms-eval's ``llava_hf`` chat model build it; the Qwen models put a system turn first
(``system_prompt``, default ``You are a helpful assistant.``) and drop ``<image>`` from the
text, as lmms-eval's ``qwen2_vl`` / ``qwen2_5_vl`` do. The logged compression config is the one
that runs on the model (:func:`llava.hf.resolved_config`: on OneVision's and Qwen's CLS-free
towers a method's default [CLS] score is ``neg_cos``).

Videos (OneVision and Qwen; ``llava_hf_gc2`` refuses them): lmms-eval passes a video as its
file path; the frames are those lmms-eval's stock models give the same checkpoint
(:mod:`llava.lmms.video`), with the same arguments and defaults:

- ``llava_onevision_gc2``: ``max_frames_num`` (32) frames at ``linspace(0, total - 1, n)``
  (truncated), as ``llava_hf`` / ``llava_onevision`` read them; the processor resizes them.
- ``qwen2_vl_gc2`` / ``qwen2_5_vl_gc2``: qwen-vl-utils' sampling at ``fps`` (2) frames a second,
  then lmms-eval's cut to ``max_num_frames`` (32); every frame resized as qwen-vl-utils does
  between ``min_pixels`` and ``max_pixels`` (Qwen2-VL 3136 / 602112, Qwen2.5-VL 200704 /
  1605632, lmms-eval's defaults). ``qwen2_5_vl_gc2``'s ``video_metadata=True`` hands the
  processor each video's frame rate and sampled frames, so its temporal positions count
  seconds; off by default, as in lmms-eval's ``qwen2_5_vl``, which passes none (transformers
  then takes the frames to be 24 a second).

Where we differ from lmms-eval's stock models: the prompt (above; lmms-eval's simple
``llava_hf`` writes ``<video>``, a newline and the text through the tokenizer's template and
``llava_onevision`` uses LLaVA's ``qwen_1_5`` conversation; a ``chat_template=`` can render
either layout); every video of a batch is cut to ``max_num_frames`` (lmms-eval's Qwen models cut the batch's first video only:
the same at ``batch_size=1`` with one video per document); ``fps`` is honoured
(``qwen2_5_vl`` takes it and ignores it); ``min_pixels`` / ``max_pixels`` size the video
frames only — images keep the checkpoint's image processor settings (the Qwen models also
resize images by them, after a JPEG round trip); any video file PyAV reads is taken (the Qwen
models drop paths not ending in .mp4/.avi/.mov); a video that cannot be read stops the run
naming it (lmms-eval's models log it and go on); frames are decoded with PyAV and Qwen's
resized with PIL (pixel values can differ a little; indices and sizes do not).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from llava.eval.generation import Answer, output_lengths
from llava.utils import input_device

from .base import CompressingLMM
from .video import (
    QWEN_FPS,
    VideoClip,
    onevision_indices,
    qwen_frame_size,
    qwen_indices,
    read_clip,
    resize_frames,
)

QWEN_SYSTEM_PROMPT = "You are a helpful assistant."  # lmms-eval's qwen2_vl / qwen2_5_vl default


def _template(value: str | None) -> str | None:
    if value is not None and os.path.isfile(value):
        with open(value, encoding="utf-8") as fh:
            return fh.read()
    return value


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def _kind(visual: Any) -> str:
    return "video" if isinstance(visual, VideoClip) else "image"


class HFCompressingLMM(CompressingLMM):
    """A transformers VLM family served by :mod:`llava.hf`."""

    MODEL_CLASS: ClassVar[str] = ""
    PROCESSOR_CLASS: ClassVar[str] = ""
    MODEL_ARGS = ("pretrained", "device", "device_map", "dtype", "attn_implementation", "batch_size",
                  "max_batch_size", "chat_template")
    system_prompt: str | None = None

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        device_map: str | None = None,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        chat_template: str | None = None,
        compression: str = "none",
        **options: Any,
    ) -> None:
        super().__init__()
        import transformers

        from llava.hf import adapter_for, resolved_config
        from llava.hf.processors import load_processor

        self.setup(compression, options, device=device, batch_size=batch_size)
        self.dtype = self.resolve_dtype(dtype, str(pretrained))
        load: dict[str, Any] = {"dtype": getattr(torch, self.dtype), "device_map": device_map or str(self.device)}
        if attn_implementation is not None:
            load["attn_implementation"] = attn_implementation
        self._model = getattr(transformers, self.MODEL_CLASS).from_pretrained(str(pretrained), **load).eval()
        self.adapter = adapter_for(self._model)
        if self.compressor is not None:
            self.adapter.check(self.compressor)
        # as it runs here: a CLS-free tower (OneVision's SigLIP, Qwen's) scores by neg_cos by default
        self.compression = resolved_config(self._model, self.compressor)
        self.processor = load_processor(str(pretrained), self.PROCESSOR_CLASS)
        self.processor.tokenizer.padding_side = "left"
        self.chat_template = _template(chat_template)
        if (self.chat_template or self.processor.chat_template) is None:
            raise ValueError(f"{pretrained} has no chat template; pass chat_template= (a Jinja template or a file)")
        self.pretrained = str(pretrained)

    @property
    def model(self):
        return self._model

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def clean_text(self, text: str) -> str:
        """The task's text as it goes into the user turn."""
        return text

    def prompt(self, text: str, kinds: Sequence[str] = ("image",)) -> str:
        """The chat prompt of one request: a placeholder per visual (``kinds``: ``image`` /
        ``video``, in order), then ``text``."""
        content = [{"type": k} for k in kinds] + [{"type": "text", "text": self.clean_text(text)}]
        messages = [{"role": "user", "content": content}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  chat_template=self.chat_template)

    def video_kwargs(self, videos: list[VideoClip]) -> dict[str, Any]:
        """Processor arguments for the batch's videos (besides the frames)."""
        return {}

    def read(self, path: str, pick) -> VideoClip:
        """The frames ``pick(total_frames, fps)`` names of the video file ``path``."""
        if getattr(self.processor, "video_processor", None) is None:
            raise ValueError(f"{self.pretrained} holds no video processor settings (processor_config.json, "
                             "video_preprocessor_config.json or preprocessor_config.json), so it takes images only")
        return read_clip(path, pick)

    def inputs(self, messages: list[str], visuals: list[list]):
        """The processor's output for a batch (images and videos of every row, in order)."""
        texts = [self.prompt(m, [_kind(v) for v in row]) for m, row in zip(messages, visuals)]
        images = [v for row in visuals for v in row if _kind(v) == "image"]
        videos = [v for row in visuals for v in row if _kind(v) == "video"]
        extra = self.video_kwargs(videos) if videos else {}
        inputs = self.processor(text=texts, images=images or None, videos=[c.frames for c in videos] or None,
                                return_tensors="pt", padding=True, **extra)
        inputs = inputs.to(input_device(self._model))  # where the embeddings run (device_map, offloading)
        for key in ("pixel_values", "pixel_values_videos"):
            if isinstance(inputs.get(key), torch.Tensor):
                inputs[key] = inputs[key].to(self._model.dtype)
        return inputs

    def answer(self, messages: list[str], visuals: list[list], gen: dict[str, Any]) -> list[Answer]:
        import llava.hf

        inputs = self.inputs(messages, visuals)
        sampling = gen["temperature"] > 0
        with torch.inference_mode():
            out, records = llava.hf.generate(
                self._model, self.compressor, return_records=True, **inputs, max_new_tokens=gen["max_new_tokens"],
                do_sample=sampling, temperature=gen["temperature"] if sampling else None,
                top_p=gen["top_p"] if sampling else None, num_beams=gen["num_beams"])
        new = out[:, inputs["input_ids"].shape[1]:]  # [B, new]
        answers_text = [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]
        # records: the batch's images, then its videos, each in prompt order
        image_infos = iter([r.info() for r in records if not r.is_video])
        video_infos = iter([r.info() for r in records if r.is_video])
        n_out = output_lengths(new, self._model.generation_config.eos_token_id)
        prompt_len = inputs["attention_mask"].sum(dim=1).tolist()
        answers = []
        for text, row, n, o in zip(answers_text, visuals, prompt_len, n_out):
            imgs = [next(image_infos) for v in row if _kind(v) == "image"]
            vids = [{**next(video_infos), "frame_indices": v.indices} for v in row if _kind(v) == "video"]
            dropped = sum(i["tokens_uncompressed"] - i["tokens"] for i in imgs + vids)
            answers.append(Answer(text, imgs, n - dropped, o, vids))
        return answers


class LlavaNextGC2(HFCompressingLMM):
    MODEL_CLASS = "LlavaNextForConditionalGeneration"
    PROCESSOR_CLASS = "LlavaNextProcessor"


class LlavaOnevisionGC2(HFCompressingLMM):
    MODEL_CLASS = "LlavaOnevisionForConditionalGeneration"
    PROCESSOR_CLASS = "LlavaOnevisionProcessor"
    VIDEO = True
    MODEL_ARGS = (*HFCompressingLMM.MODEL_ARGS, "max_frames_num")

    def __init__(self, pretrained: str, max_frames_num: int = 32, **kwargs: Any) -> None:
        self.max_frames_num = _count(max_frames_num, "max_frames_num")
        super().__init__(pretrained, **kwargs)

    def load_video(self, path: str) -> VideoClip:
        return self.read(path, lambda total, fps: onevision_indices(total, self.max_frames_num))


class Qwen2VLGC2(HFCompressingLMM):
    MODEL_CLASS = "Qwen2VLForConditionalGeneration"
    PROCESSOR_CLASS = "Qwen2VLProcessor"
    VIDEO = True
    MODEL_ARGS = (*HFCompressingLMM.MODEL_ARGS, "max_num_frames", "fps", "min_pixels", "max_pixels", "system_prompt")
    #: lmms-eval's defaults of min_pixels, max_pixels
    PIXELS: ClassVar[tuple[int, int]] = (3136, 602112)

    def __init__(self, pretrained: str, max_num_frames: int = 32, fps: float | None = None,
                 min_pixels: int | None = None, max_pixels: int | None = None,
                 system_prompt: str | None = QWEN_SYSTEM_PROMPT, **kwargs: Any) -> None:
        self.max_num_frames = _count(max_num_frames, "max_num_frames")
        self.fps = QWEN_FPS if fps is None else _positive(fps, "fps")
        self.min_pixels = _count(self.PIXELS[0] if min_pixels is None else min_pixels, "min_pixels")
        self.max_pixels = _count(self.PIXELS[1] if max_pixels is None else max_pixels, "max_pixels")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        self.system_prompt = None if system_prompt is None else str(system_prompt)
        super().__init__(pretrained, **kwargs)

    def clean_text(self, text: str) -> str:
        return text.replace("<image>", "")

    def load_video(self, path: str) -> VideoClip:
        sampled: list[int] = []

        def pick(total: int, fps: float | None) -> list[int]:
            indices, n = qwen_indices(total, fps, self.max_num_frames, self.fps)
            sampled.append(n)
            return indices

        clip = self.read(path, pick)
        height, width = qwen_frame_size(*clip.frames.shape[1:3], sampled[0], self.min_pixels, self.max_pixels)
        clip.frames = resize_frames(clip.frames, height, width)
        return clip

    def video_kwargs(self, videos: list[VideoClip]) -> dict[str, Any]:
        # the frames are at qwen-vl-utils' size already; the processor keeps them (as it does
        # in lmms-eval, where its own size bounds are these min_pixels / max_pixels)
        return {"videos_kwargs": {"do_resize": False}}


class Qwen2_5_VLGC2(Qwen2VLGC2):
    MODEL_CLASS = "Qwen2_5_VLForConditionalGeneration"
    PROCESSOR_CLASS = "Qwen2_5_VLProcessor"
    MODEL_ARGS = (*Qwen2VLGC2.MODEL_ARGS, "video_metadata")
    PIXELS = (256 * 28 * 28, 1605632)

    def __init__(self, pretrained: str, video_metadata: bool = False, **kwargs: Any) -> None:
        if not isinstance(video_metadata, bool):
            raise ValueError(f"video_metadata must be true or false, got {video_metadata!r}")
        self.video_metadata = video_metadata
        super().__init__(pretrained, **kwargs)

    def video_kwargs(self, videos: list[VideoClip]) -> dict[str, Any]:
        out = super().video_kwargs(videos)
        if self.video_metadata:
            out["videos_kwargs"]["video_metadata"] = [c.metadata() for c in videos]
        return out
