"""LLaVA on transformers' Mistral: ``LlavaMistralForCausalLM``."""

from __future__ import annotations

from torch import nn
from transformers import MistralConfig, MistralForCausalLM, MistralModel
from transformers.models.mistral.modeling_mistral import MistralPreTrainedModel

from ..llava_arch import LlavaMetaForCausalLM, LlavaMetaModel
from .llava_llama import multimodal_forward, multimodal_generate


class LlavaMistralConfig(MistralConfig):
    model_type = "llava_mistral"


class LlavaMistralModel(LlavaMetaModel, MistralModel):
    config_class = LlavaMistralConfig


class LlavaMistralForCausalLM(MistralForCausalLM, LlavaMetaForCausalLM):
    config_class = LlavaMistralConfig

    base_lm_class = MistralForCausalLM

    def __init__(self, config):
        MistralPreTrainedModel.__init__(self, config)
        self.model = LlavaMistralModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.compressor = None
        self.last_images = []
        self.stage_times = {}
        self.post_init()

    forward = multimodal_forward
    generate = multimodal_generate
