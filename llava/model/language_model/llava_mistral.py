"""LLaVA on transformers' Mistral: ``LlavaMistralForCausalLM``."""

from __future__ import annotations

from transformers import MistralConfig, MistralForCausalLM, MistralModel
from transformers.models.mistral.modeling_mistral import MistralPreTrainedModel

from ..llava_arch import LlavaMetaForCausalLM, LlavaMetaModel
from .llava_llama import init_llava_lm, multimodal_forward, multimodal_generate


class LlavaMistralConfig(MistralConfig):
    model_type = "llava_mistral"


class LlavaMistralModel(LlavaMetaModel, MistralModel):
    config_class = LlavaMistralConfig


class LlavaMistralForCausalLM(MistralForCausalLM, LlavaMetaForCausalLM):
    config_class = LlavaMistralConfig

    base_lm_class = MistralForCausalLM

    def __init__(self, config):
        init_llava_lm(self, config, MistralPreTrainedModel, LlavaMistralModel)

    forward = multimodal_forward
    generate = multimodal_generate
