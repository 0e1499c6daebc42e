"""The one place that knows how transformers' causal LMs are put together.

LLaVA's classes are transformers' own ``LlamaForCausalLM`` / ``MistralForCausalLM`` plus the
multimodal parts of :mod:`llava.model.llava_arch`. What that needs from transformers, and
nothing elsewhere does, is here:

- construction: the base class builds ``self.model`` and ``lm_head`` and then calls
  ``post_init``; :meth:`LlavaCausalLM.post_init` adds the vision tower, projector and
  ``image_newline`` to ``self.model`` just before the base ``post_init`` runs, so they are
  registered like any other submodule (no bypassed ``__init__``);
- the name of the KV-cache argument of ``forward`` (``cache`` since transformers 5.24,
  ``past_key_values`` before): read from the base class's signature, so we never pass the
  deprecated name; callers may use either;
- the attention kernel of the nested CLIP tower, set through the public
  ``set_attn_implementation``;
- ``generate``: the multimodal prompt is spliced once into ``inputs_embeds`` and handed to
  ``GenerationMixin.generate`` (which then returns only the new tokens, as the original tree).
"""

from __future__ import annotations

import inspect

import torch

from .llava_arch import _UNSET, LlavaMetaForCausalLM, attach_multimodal


def _cache_arg(cls) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class LlavaCausalLM(LlavaMetaForCausalLM):
    """Mix in *before* a transformers causal-LM class: ``class X(LlavaCausalLM, LlamaForCausalLM)``."""

    #: Keep the whole CLIP tower on one device under ``device_map="auto"`` (its layer loop and
    #: the [CLS] scorer read the layer weights directly).
    _no_split_modules = ["CLIPVisionTower", "LlamaDecoderLayer", "MistralDecoderLayer"]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._cache_arg = _cache_arg(super())

    def post_init(self):
        if not hasattr(self, "last_images"):
            attach_multimodal(self.model, self.config)
            self.last_images = []
            self.stage_times = {}
        super().post_init()

    # ------------------------------------------------------------------ forward

    def _split_cache(self, kwargs: dict):
        """Pop the KV cache from ``kwargs`` under either name."""
        cache = kwargs.pop("cache", None)
        old = kwargs.pop("past_key_values", None)
        return cache if cache is not None else old

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                use_cache=None, images=None, image_sizes=None, compressor=_UNSET, image_records=None, **kwargs):
        """The base causal LM's ``forward`` with ``images``/``image_sizes`` spliced in first
        (``compressor``/``image_records``: see :mod:`llava.model.llava_arch`). Overlong
        spliced sequences are truncated like the original tree (this is also the training path)."""
        cache = self._split_cache(kwargs)
        if inputs_embeds is None and images is not None:
            (input_ids, position_ids, attention_mask, cache, inputs_embeds, labels) = (
                self.prepare_inputs_labels_for_multimodal(
                    input_ids, position_ids, attention_mask, cache, labels, images, image_sizes,
                    compressor=compressor, image_records=image_records,
                )
            )
        kwargs.pop("return_dict", None)
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds,
            labels=labels, use_cache=use_cache, **{self._cache_arg: cache}, **kwargs,
        )

    @torch.no_grad()
    def generate(self, inputs=None, images=None, image_sizes=None, compressor=_UNSET, image_records=None, **kwargs):
        """``generate(input_ids, images=..., image_sizes=...)`` as in the original tree; returns
        only the new tokens. Batched prompts may be padded on either side (``attention_mask``).

        ``compressor`` (per call, ``None`` = off) and ``image_records`` (a list that receives
        the per-image records): see :mod:`llava.model.llava_arch`. A spliced prompt longer than
        ``config.tokenizer_model_max_length`` raises :class:`llava.errors.PromptTooLongError`.
        """
        if "inputs_embeds" in kwargs:
            raise NotImplementedError("pass input_ids and images; inputs_embeds is computed here")
        position_ids = kwargs.pop("position_ids", None)
        attention_mask = kwargs.pop("attention_mask", None)
        if images is not None:
            _, position_ids, attention_mask, _, inputs_embeds, _ = self.prepare_inputs_labels_for_multimodal(
                inputs, position_ids, attention_mask, None, None, images, image_sizes=image_sizes, padding_side="left",
                compressor=compressor, image_records=image_records, too_long="raise",
            )
        else:
            self.last_images = []
            inputs_embeds = self.get_model().embed_tokens(inputs)
            if attention_mask is None:
                attention_mask = torch.ones(inputs.shape, dtype=torch.long, device=inputs.device)
        return super().generate(
            position_ids=position_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
        )

    # ------------------------------------------------------------------ kernels

    def set_tower_attn_implementation(self, attn: str) -> None:
        """Run the nested CLIP tower on the same attention kernel as the LLM."""
        tower = self.get_vision_tower()
        if tower is not None:
            tower.vision_tower.set_attn_implementation(attn)


__all__ = ["LlavaCausalLM"]
