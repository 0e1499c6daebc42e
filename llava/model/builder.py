"""``load_pretrained_model``: the original tree's entry point, offline-safe.

Loads an original-format LLaVA checkpoint (``liuhaotian/llava-v1.6-*`` layout: Llama/Mistral
weights, ``model.mm_projector.*``, ``model.image_newline``, the fine-tuned CLIP tower under
``model.vision_tower.vision_tower.vision_model.*``) from a local folder.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from llava.compression import Compressor, build_compressor

from .language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from .language_model.llava_mistral import LlavaMistralConfig, LlavaMistralForCausalLM
from .multimodal_encoder.builder import build_image_processor, resolve_vision_config, vision_config_dict

logger = logging.getLogger(__name__)

_ARCHES = {
    "LlavaLlamaForCausalLM": (LlavaConfig, LlavaLlamaForCausalLM),
    "LlavaMistralForCausalLM": (LlavaMistralConfig, LlavaMistralForCausalLM),
}


def _llava_classes(model_path: str, model_name: str):
    raw, _ = PretrainedConfig.get_config_dict(model_path)
    arch = (raw.get("architectures") or [""])[0]
    if arch in _ARCHES:
        return _ARCHES[arch], raw
    key = "LlavaMistralForCausalLM" if "mistral" in (model_name or "").lower() else "LlavaLlamaForCausalLM"
    return _ARCHES[key], raw


def _attn_impl(use_flash_attn: bool, requested: str | None) -> str:
    if requested:
        return requested
    if use_flash_attn:
        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        warnings.warn("use_flash_attn=True but flash_attn is not installed; using SDPA", stacklevel=3)
    return "sdpa"


def load_tokenizer(model_path: str):
    """The checkpoint's tokenizer: ``tokenizer.json``, or the original checkpoints'
    SentencePiece ``tokenizer.model`` + ``tokenizer_config.json`` (converted to a fast one)."""
    names = ("tokenizer.json", "tokenizer.model")
    if not any(os.path.isfile(os.path.join(model_path, n)) for n in names):
        raise FileNotFoundError(f"no tokenizer in {model_path}: expected one of {', '.join(names)}")
    return AutoTokenizer.from_pretrained(model_path, use_fast=True)


def as_compressor(compressor) -> Compressor | None:
    """Accept a :class:`Compressor`, a method name, a ``{"name": ..., **options}`` dict or None."""
    if compressor is None or isinstance(compressor, Compressor):
        return compressor
    if isinstance(compressor, str):
        return build_compressor(compressor)
    if isinstance(compressor, dict):
        opts = dict(compressor)
        return build_compressor(opts.pop("name"), **opts)
    raise TypeError(f"compressor must be a Compressor, a method name or a dict, got {type(compressor).__name__}")


def load_pretrained_model(
    model_path: str,
    model_base: str | None,
    model_name: str,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map="auto",
    device: str = "cuda",
    use_flash_attn: bool = False,
    *,
    dtype: torch.dtype | str | None = None,
    attn_implementation: str | None = None,
    compressor=None,
    vision_tower_path: str | None = None,
    **kwargs,
):
    """Load a LLaVA checkpoint; returns ``(tokenizer, model, image_processor, context_len)``.

    Arguments beyond the original signature (keyword-only):

    - ``dtype``: weights dtype; default float16 on CUDA, float32 elsewhere.
    - ``attn_implementation``: ``"sdpa"`` (default), ``"flash_attention_2"`` (also chosen by
      ``use_flash_attn=True`` when flash-attn is installed) or ``"eager"``; applies to the LLM
      and the vision tower.
    - ``compressor``: a :class:`llava.compression.Compressor`, a method name or a
      ``{"name": ..., **options}`` dict; sets ``model.compressor`` (None = off).
    - ``vision_tower_path``: a local folder with the CLIP tower's ``config.json`` and
      ``preprocessor_config.json`` (otherwise resolved offline from the checkpoint, see
      :func:`llava.model.multimodal_encoder.builder.resolve_vision_config`).

    ``model_path`` should be a local folder; nothing here downloads the vision tower.
    """
    if model_base is not None:
        raise NotImplementedError(
            "model_base (LoRA / projector-only checkpoints) is not supported; merge the weights first "
            "and pass the merged folder as model_path"
        )
    if not os.path.isdir(model_path):
        raise FileNotFoundError(f"model folder not found: {model_path}")
    if not os.path.isfile(os.path.join(model_path, "config.json")):
        raise FileNotFoundError(f"{os.path.join(model_path, 'config.json')} is missing")

    on_cuda = str(device).startswith("cuda") and torch.cuda.is_available()
    load_kwargs: dict = dict(kwargs)
    if on_cuda:
        if device != "cuda":
            device_map = {"": device}
        load_kwargs["device_map"] = device_map
    if load_8bit or load_4bit:
        from transformers import BitsAndBytesConfig

        load_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=load_8bit, load_in_4bit=load_4bit,
            bnb_4bit_compute_dtype=torch.float16, bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4",
        )
    if dtype is None:
        dtype = torch.float16 if on_cuda else torch.float32
    attn = _attn_impl(use_flash_attn, attn_implementation)

    tokenizer = load_tokenizer(model_path)
    (config_cls, model_cls), raw = _llava_classes(model_path, model_name)
    if raw.get("mm_vision_tower") is None:  # a plain language model
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation=attn, **load_kwargs)
        return tokenizer, model, None, getattr(model.config, "max_sequence_length", 2048)

    config = config_cls.from_dict({k: v for k, v in raw.items() if k != "model_type"})
    vcfg, proc_settings, source = resolve_vision_config(config, model_path, vision_tower_path)
    logger.info("vision tower config from %s", source)
    config.mm_vision_config = vision_config_dict(vcfg)
    model = model_cls.from_pretrained(model_path, config=config, dtype=dtype, attn_implementation=attn, **load_kwargs)
    _set_attn_everywhere(model, attn)
    if not on_cuda and not (load_8bit or load_4bit):
        model.to(device if device != "cuda" else "cpu")
    model.eval()
    model.compressor = as_compressor(compressor)
    image_processor = build_image_processor(proc_settings)
    context_len = getattr(model.config, "max_sequence_length", 2048)
    return tokenizer, model, image_processor, context_len


def _set_attn_everywhere(model, attn: str) -> None:
    """Make sure the nested CLIP tower uses the same attention kernel as the LLM."""
    tower = model.get_vision_tower()
    if tower is not None:
        try:
            tower.vision_tower.set_attn_implementation(attn)
        except (AttributeError, ValueError, ImportError):
            tower.vision_tower.config._attn_implementation = attn


__all__ = ["load_pretrained_model", "as_compressor"]
