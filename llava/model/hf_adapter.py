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
  ``GenerationMixin.generate`` (which then returns only the new tokens, as the original tree);
- for the in-LLM pruning methods (FastV, SparseVLM, PDrop), the decoder stack runs through
  :mod:`llava.model.pruned_stack` (it serves transformers' own VLMs too).
"""

from __future__ import annotations

import inspect

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from llava.compression.in_llm import llm_stage

from .llava_arch import _UNSET, LlavaMetaForCausalLM, attach_multimodal
from .pruned_stack import LLMPruning, is_pruned, pop_cache, pruned_forward


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

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                use_cache=None, images=None, image_sizes=None, compressor=_UNSET, image_records=None,
                llm_pruning: LLMPruning | None = None, **kwargs):
        """The base causal LM's ``forward`` with ``images``/``image_sizes`` spliced in first
        (``compressor``/``image_records``: see :mod:`llava.model.llava_arch`). Overlong
        spliced sequences are truncated like the original tree (this is also the training path).

        With an in-LLM compressor (FastV, SparseVLM, PDrop, or a pipeline ending in one) the
        decoder stack runs through :func:`pruned_forward`; ``llm_pruning`` passes an explicit
        plan for a prompt given as ``inputs_embeds`` (``generate`` does this)."""
        cache = pop_cache(kwargs)
        if inputs_embeds is None and images is not None:
            compressor, _ = self._resolve(compressor, None)
            (input_ids, position_ids, attention_mask, cache, inputs_embeds, labels, spliced) = (
                self.prepare_inputs_labels_for_multimodal(
                    input_ids, position_ids, attention_mask, cache, labels, images, image_sizes,
                    compressor=compressor, image_records=image_records, with_image_ids=True,
                )
            )
            llm_pruning = llm_plan(compressor, spliced) or llm_pruning
        kwargs.pop("return_dict", None)
        if llm_pruning is not None or is_pruned(cache):
            return self._pruned_forward(llm_pruning, input_ids, attention_mask, position_ids, inputs_embeds, labels,
                                        use_cache, cache, kwargs)
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds,
            labels=labels, use_cache=use_cache, **{self._cache_arg: cache}, **kwargs,
        )

    def _pruned_forward(self, plan, input_ids, attention_mask, position_ids, inputs_embeds, labels, use_cache, cache,
                        kwargs) -> CausalLMOutputWithPast:
        """The causal LM's head on :func:`pruned_forward`'s hidden states."""
        keep = kwargs.pop("logits_to_keep", 0)
        out = pruned_forward(self.model, plan, input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, inputs_embeds=inputs_embeds, cache=cache, use_cache=use_cache,
                             **kwargs)
        hidden = out.last_hidden_state[:, slice(-keep, None) if isinstance(keep, int) else keep]  # keep=0: all
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache)

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
            compressor, _ = self._resolve(compressor, None)
            _, position_ids, attention_mask, _, inputs_embeds, _, spliced = self.prepare_inputs_labels_for_multimodal(
                inputs, position_ids, attention_mask, None, None, images, image_sizes=image_sizes, padding_side="left",
                compressor=compressor, image_records=image_records, too_long="raise", with_image_ids=True,
            )
            plan = llm_plan(compressor, spliced)
            if plan is not None:
                kwargs["llm_pruning"] = plan
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


def llm_plan(compressor, spliced) -> LLMPruning | None:
    """The in-LLM plan of a spliced batch (``(image_ids, records)``), if ``compressor`` has an
    in-LLM stage."""
    method = llm_stage(compressor)
    if method is None or spliced is None:
        return None
    image_ids, records = spliced
    return LLMPruning(method, image_ids, records)


__all__ = ["LlavaCausalLM", "llm_plan"]
