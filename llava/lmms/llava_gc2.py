"""``llava_gc2``: our LLaVA-NeXT tree (original-format checkpoints) in lmms-eval.

``lmms-eval --model llava_gc2 --model_args pretrained=/ckpts/llava-v1.6-vicuna-7b,compression=globalcom2,retention_ratio=0.25``

Model arguments: ``pretrained`` (a local checkpoint folder, loaded by
:func:`llava.model.builder.load_pretrained_model`), ``model_name``, ``conv_template``
(``vicuna_v1``), ``device`` (``cuda`` if available, else ``cpu``), ``device_map``, ``dtype``
(as the drivers' ``--dtype``: default float16 on CUDA, float32 elsewhere; ``auto`` = the
checkpoint's ``torch_dtype``; ``float16``, ``bfloat16``, ``float32``, ...),
``attn_implementation`` (``sdpa``, ``flash_attention_2``, ``eager``), ``batch_size`` (left-padded;
the same answers as 1) and the compression arguments of :mod:`llava.lmms.options`. The prompt
is built as in our eval drivers (:mod:`llava.eval.generation`).
"""

from __future__ import annotations

from typing import Any

from llava.eval.generation import Answer, generate_answers

from .base import CompressingLMM


class LlavaGC2(CompressingLMM):
    MODEL_ARGS = ("pretrained", "model_name", "conv_template", "device", "device_map", "dtype",
                  "attn_implementation", "batch_size", "max_batch_size")

    def __init__(
        self,
        pretrained: str,
        model_name: str | None = None,
        conv_template: str = "vicuna_v1",
        device: str | None = None,
        device_map: str | None = None,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        compression: str = "none",
        **options: Any,
    ) -> None:
        super().__init__()
        from llava.conversation import conv_templates
        from llava.mm_utils import get_model_name_from_path
        from llava.model.builder import load_pretrained_model

        self.setup(compression, options, device=device, batch_size=batch_size)
        if conv_template not in conv_templates:
            raise ValueError(f"conv_template must be one of {', '.join(sorted(conv_templates))}; got {conv_template!r}")
        self.conv_template = conv_template
        self.model_name = model_name or get_model_name_from_path(str(pretrained))
        self.dtype = self.resolve_dtype(dtype, str(pretrained))
        extra = {"device_map": device_map} if device_map is not None else {}
        self._tokenizer, self._model, self._image_processor, self._max_length = load_pretrained_model(
            str(pretrained), None, self.model_name, device=str(self.device), dtype=self.dtype,
            attn_implementation=attn_implementation, compressor=self.compressor, **extra)
        if self._image_processor is None:
            raise ValueError(f"{pretrained} is a language model without a vision tower")

    @property
    def model(self):
        return self._model

    @property
    def tokenizer(self):
        return self._tokenizer

    def answer(self, messages: list[str], visuals: list[list], gen: dict[str, Any]) -> list[Answer]:
        return generate_answers(
            self._model, self._tokenizer, self._image_processor, messages, visuals, conv_mode=self.conv_template,
            max_new_tokens=gen["max_new_tokens"], temperature=gen["temperature"], top_p=gen["top_p"],
            num_beams=gen["num_beams"], compressor=self.compressor)
