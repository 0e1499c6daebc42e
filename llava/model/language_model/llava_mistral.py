"""LLaVA on transformers' Mistral: ``LlavaMistralForCausalLM``."""

from __future__ import annotations

from transformers import MistralConfig, MistralForCausalLM

from ..hf_adapter import LlavaCausalLM


class LlavaMistralConfig(MistralConfig):
    model_type = "llava_mistral"


class LlavaMistralForCausalLM(LlavaCausalLM, MistralForCausalLM):
    config_class = LlavaMistralConfig
