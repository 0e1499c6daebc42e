"""LLaVA on transformers' Llama: ``LlavaLlamaForCausalLM`` (the original checkpoints' class)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel

from ..llava_arch import LlavaMetaForCausalLM, LlavaMetaModel


class LlavaConfig(LlamaConfig):
    model_type = "llava_llama"


class LlavaLlamaModel(LlavaMetaModel, LlamaModel):
    config_class = LlavaConfig


def multimodal_forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                       inputs_embeds=None, labels=None, use_cache=None, images=None, image_sizes=None, **kwargs):
    """``forward`` of the base causal LM, with ``images``/``image_sizes`` spliced in first."""
    if inputs_embeds is None and images is not None:
        (input_ids, position_ids, attention_mask, past_key_values, inputs_embeds, labels) = (
            self.prepare_inputs_labels_for_multimodal(
                input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes
            )
        )
    kwargs.pop("return_dict", None)
    return self.base_lm_class.forward(
        self, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
        past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache, **kwargs,
    )


@torch.no_grad()
def multimodal_generate(self, inputs=None, images=None, image_sizes=None, **kwargs):
    """``generate(input_ids, images=..., image_sizes=...)`` as in the original tree; returns
    only the new tokens. Batched prompts may be padded on either side (``attention_mask``)."""
    if "inputs_embeds" in kwargs:
        raise NotImplementedError("pass input_ids and images; inputs_embeds is computed here")
    position_ids = kwargs.pop("position_ids", None)
    attention_mask = kwargs.pop("attention_mask", None)
    if images is not None:
        _, position_ids, attention_mask, _, inputs_embeds, _ = self.prepare_inputs_labels_for_multimodal(
            inputs, position_ids, attention_mask, None, None, images, image_sizes=image_sizes, padding_side="left"
        )
    else:
        self.last_images = []
        inputs_embeds = self.get_model().embed_tokens(inputs)
        if attention_mask is None:
            attention_mask = torch.ones(inputs.shape, dtype=torch.long, device=inputs.device)
    return GenerationMixin.generate(
        self, position_ids=position_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
    )


def init_llava_lm(self, config, pretrained_cls, model_cls) -> None:
    """``__init__`` of a LLaVA causal LM: the base model with the multimodal parts, an LM head,
    compression off."""
    pretrained_cls.__init__(self, config)
    self.model = model_cls(config)
    self.vocab_size = config.vocab_size
    self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
    self.compressor = None
    self.last_images = []
    self.stage_times = {}
    self.post_init()


class LlavaLlamaForCausalLM(LlamaForCausalLM, LlavaMetaForCausalLM):
    config_class = LlavaConfig
    base_lm_class = LlamaForCausalLM

    def __init__(self, config):
        init_llava_lm(self, config, LlamaPreTrainedModel, LlavaLlamaModel)

    forward = multimodal_forward
    generate = multimodal_generate
