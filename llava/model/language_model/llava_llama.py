"""LLaVA on transformers' Llama: ``LlavaLlamaForCausalLM`` (the original checkpoints' class)."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM

from ..hf_adapter import LlavaCausalLM


class LlavaConfig(LlamaConfig):
    model_type = "llava_llama"


class LlavaLlamaForCausalLM(LlavaCausalLM, LlamaForCausalLM):
    config_class = LlavaConfig
