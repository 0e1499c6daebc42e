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
applied to one user turn — the images first, then the task's text — as transformers' own
pipelines build it. Images only: video input comes with issue 12.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch

from llava.eval.generation import Answer, output_lengths

from .base import CompressingLMM


def _template(value: str | None) -> str | None:
    if value is not None and os.path.isfile(value):
        with open(value, encoding="utf-8") as fh:
            return fh.read()
    return value


class HFCompressingLMM(CompressingLMM):
    """A transformers VLM family served by :mod:`llava.hf`."""

    MODEL_CLASS: ClassVar[str] = ""
    PROCESSOR_CLASS: ClassVar[str] = ""
    MODEL_ARGS = ("pretrained", "device", "device_map", "dtype", "attn_implementation", "batch_size",
                  "max_batch_size", "chat_template")

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

        from llava.hf import adapter_for
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
        self.processor = load_processor(str(pretrained), self.PROCESSOR_CLASS)
        self.processor.tokenizer.padding_side = "left"
        self.chat_template = _template(chat_template)
        if (self.chat_template or self.processor.chat_template) is None:
            raise ValueError(f"{pretrained} has no chat template; pass chat_template= (a Jinja template or a file)")

    @property
    def model(self):
        return self._model

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def prompt(self, text: str, n_images: int) -> str:
        content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                  add_generation_prompt=True, chat_template=self.chat_template)

    def answer(self, messages: list[str], visuals: list[list], gen: dict[str, Any]) -> list[Answer]:
        import llava.hf

        texts = [self.prompt(m, len(v)) for m, v in zip(messages, visuals)]
        images = [im for v in visuals for im in v]
        inputs = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        sampling = gen["temperature"] > 0
        with torch.inference_mode():
            out, records = llava.hf.generate(
                self._model, self.compressor, return_records=True, **inputs, max_new_tokens=gen["max_new_tokens"],
                do_sample=sampling, temperature=gen["temperature"] if sampling else None,
                top_p=gen["top_p"] if sampling else None, num_beams=gen["num_beams"])
        new = out[:, inputs["input_ids"].shape[1]:]  # [B, new]
        answers_text = [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]
        per_image = iter(r.info() for r in records)
        infos = [[next(per_image) for _ in v] for v in visuals]
        n_out = output_lengths(new, self._model.generation_config.eos_token_id)
        prompt_len = inputs["attention_mask"].sum(dim=1).tolist()
        return [Answer(t, inf, n - sum(i["tokens_uncompressed"] - i["tokens"] for i in inf), o)
                for t, inf, n, o in zip(answers_text, infos, prompt_len, n_out)]


class LlavaNextGC2(HFCompressingLMM):
    MODEL_CLASS = "LlavaNextForConditionalGeneration"
    PROCESSOR_CLASS = "LlavaNextProcessor"


class LlavaOnevisionGC2(HFCompressingLMM):
    MODEL_CLASS = "LlavaOnevisionForConditionalGeneration"
    PROCESSOR_CLASS = "LlavaOnevisionProcessor"


class Qwen2VLGC2(HFCompressingLMM):
    MODEL_CLASS = "Qwen2VLForConditionalGeneration"
    PROCESSOR_CLASS = "Qwen2VLProcessor"


class Qwen2_5_VLGC2(HFCompressingLMM):
    MODEL_CLASS = "Qwen2_5_VLForConditionalGeneration"
    PROCESSOR_CLASS = "Qwen2_5_VLProcessor"
