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
from transformers import AutoModelForCausalLM

from llava.compression import Compressor, build_compressor
from llava.utils import read_json

from .language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from .language_model.llava_mistral import LlavaMistralConfig, LlavaMistralForCausalLM
from .multimodal_encoder.builder import build_image_processor, resolve_vision_config, vision_config_dict
from .tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

_ARCHES = {
    "LlavaLlamaForCausalLM": (LlavaConfig, LlavaLlamaForCausalLM),
    "LlavaMistralForCausalLM": (LlavaMistralConfig, LlavaMistralForCausalLM),
}

#: dtype names accepted by ``load_pretrained_model(dtype=...)`` and the ``--dtype`` flags.
DTYPES = {
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
}
_CONFIG_DTYPES = {"float16", "bfloat16", "float32", "float64", "auto"}

#: Modules that stay unquantised under 4/8-bit loading: the CLIP tower and the projector, as
#: in the original tree (which loaded the tower separately), and the LM head.
QUANTIZATION_SKIP_MODULES = ["vision_tower", "mm_projector", "lm_head"]


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``"bf16"``/``"bfloat16"``/``torch.bfloat16`` → ``torch.bfloat16``; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[key]


def run_dtype(dtype: str | None, device: str, model_path: str, flag: str = "dtype") -> str:
    """The weights dtype a run uses, by name: ``dtype``; ``auto`` = the checkpoint's
    ``torch_dtype``; by default float16 on CUDA (as the original scripts) and float32 elsewhere.
    A checkpoint whose dtype cannot be read is a ValueError starting with ``"<flag> auto: "``."""
    if dtype is None:
        return "float16" if device.startswith("cuda") else "float32"
    if dtype != "auto":
        return dtype
    config = os.path.join(model_path, "config.json")
    try:
        raw = read_json(config)
    except ValueError as e:
        raise ValueError(f"{flag} auto: {e}") from None
    value = raw.get("torch_dtype", raw.get("dtype")) if isinstance(raw, dict) else None
    name = str(value).removeprefix("torch.")
    if name not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"{flag} auto: {config} has torch_dtype {value!r}, not one of float32, float16, bfloat16; "
                         f"pass {flag} explicitly")
    return name


def _check_config_dtype(raw: dict, config_file: str) -> None:
    for key in ("torch_dtype", "dtype"):
        value = raw.get(key)
        if value is not None and str(value).removeprefix("torch.") not in _CONFIG_DTYPES:
            raise ValueError(
                f"{config_file}: {key} {value!r} is not a dtype; expected one of {', '.join(sorted(_CONFIG_DTYPES))}"
            )


def check_device(device: str) -> torch.device:
    """``device`` as a torch device; a device this machine does not have is a ValueError."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r} ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} was asked for but MPS is not available here")
    return dev


def _read_config(model_path: str) -> dict:
    config_file = os.path.join(model_path, "config.json")
    raw = read_json(config_file)
    if not isinstance(raw, dict):
        raise ValueError(f"{config_file}: expected a JSON object")
    _check_config_dtype(raw, config_file)
    if raw.get("model_type") == "llava_next" or "LlavaNextForConditionalGeneration" in (raw.get("architectures") or []):
        raise ValueError(
            f"{model_path} is a transformers (llava-hf) LLaVA-NeXT folder, not the original format this loader "
            f"reads; convert it once with `python -m llava.convert to-original {model_path} DST` and load DST"
        )
    return raw


def _llava_classes(raw: dict, model_name: str):
    arch = (raw.get("architectures") or [""])[0]
    if arch in _ARCHES:
        return _ARCHES[arch]
    key = "LlavaMistralForCausalLM" if "mistral" in (model_name or "").lower() else "LlavaLlamaForCausalLM"
    return _ARCHES[key]


def _attn_impl(use_flash_attn: bool, requested: str | None) -> str:
    if requested:
        return requested
    if use_flash_attn:
        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        warnings.warn("use_flash_attn=True but flash_attn is not installed; using SDPA", stacklevel=3)
    return "sdpa"


def quantization_config(load_8bit: bool, load_4bit: bool):
    """The original tree's bitsandbytes settings, with the tower and projector left
    unquantised (``llm_int8_skip_modules``); None when neither is asked for."""
    if not (load_8bit or load_4bit):
        return None
    if load_8bit and load_4bit:
        raise ValueError("choose one of load_8bit and load_4bit")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_8bit=load_8bit, load_in_4bit=load_4bit, llm_int8_skip_modules=list(QUANTIZATION_SKIP_MODULES),
        bnb_4bit_compute_dtype=torch.float16, bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4",
    )


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


def _check_placement(model) -> None:
    """A ``device_map`` that sends ``model.image_newline`` alone to ``"disk"`` leaves it on
    ``meta`` with nothing to load it back (accelerate loads offloaded weights per module, and it
    is a bare parameter): refuse that placement here rather than fail at the first image."""
    from accelerate.utils import has_offloaded_params

    base = model.get_model()
    newline = getattr(base, "image_newline", None)
    if newline is not None and newline.device.type == "meta" and not has_offloaded_params(base):
        raise ValueError(
            "device_map offloads model.image_newline on its own to 'disk', where it cannot be loaded back; "
            "map it to a device or to 'cpu' (it is one vector of hidden_size values)"
        )


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

    - ``dtype``: weights dtype, a ``torch.dtype`` or a name (``"bf16"``, ``"float16"``, …;
      see :data:`DTYPES`); default float16 on CUDA (as the original), float32 elsewhere.
    - ``attn_implementation``: ``"sdpa"`` (default), ``"flash_attention_2"`` (also chosen by
      ``use_flash_attn=True`` when flash-attn is installed) or ``"eager"``; applies to the LLM
      and the vision tower.
    - ``compressor``: a :class:`llava.compression.Compressor`, a method name or a
      ``{"name": ..., **options}`` dict; sets ``model.compressor`` (None = off).
    - ``vision_tower_path``: a local folder with the CLIP tower's ``config.json`` and
      ``preprocessor_config.json`` (otherwise resolved offline from the checkpoint, see
      :func:`llava.model.multimodal_encoder.builder.resolve_vision_config`).

    ``device``: ``"cuda"`` (weights spread by ``device_map``, default ``"auto"``: every
    visible GPU), ``"cuda:N"`` (one GPU), ``"cpu"``, ``"mps"``. An explicit ``device_map``
    dict is honoured on any device (e.g. layers offloaded to ``"disk"`` with
    ``offload_folder=...``; the vision tower, projector and ``image_newline`` may be offloaded
    too). Asking for a device that is
    not there is a ``ValueError``, as are an unknown dtype and a ``torch_dtype`` in
    ``config.json`` that is not one; 4/8-bit loading keeps the CLIP tower and projector
    unquantised (:data:`QUANTIZATION_SKIP_MODULES`).

    ``model_path`` should be a local folder in the original format; nothing here downloads
    the vision tower. A transformers (llava-hf) folder is refused with the command that
    converts it.
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
    dtype = parse_dtype(dtype)
    dev = check_device(device)
    raw = _read_config(model_path)
    compressor = as_compressor(compressor)

    on_cuda = dev.type == "cuda"
    quant = quantization_config(load_8bit, load_4bit)
    load_kwargs: dict = dict(kwargs)
    if on_cuda:
        # "cuda" alone follows device_map (default "auto": spread over every visible GPU);
        # "cuda:1" pins everything to that GPU, as the original tree does.
        load_kwargs["device_map"] = {"": str(dev)} if dev.index is not None else device_map
    elif quant is not None:
        raise ValueError("4/8-bit loading needs CUDA (bitsandbytes); load in bf16 on this device instead")
    elif isinstance(device_map, dict):  # an explicit placement (e.g. offload to "disk") on any device
        load_kwargs["device_map"] = device_map
    if quant is not None:
        load_kwargs["quantization_config"] = quant
    if dtype is None:
        dtype = torch.float16 if on_cuda else torch.float32
    attn = _attn_impl(use_flash_attn, attn_implementation)

    tokenizer = load_tokenizer(model_path)
    config_cls, model_cls = _llava_classes(raw, model_name)
    if raw.get("mm_vision_tower") is None:  # a plain language model
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation=attn, **load_kwargs)
        return tokenizer, model, None, getattr(model.config, "max_sequence_length", 2048)

    # rope_scaling: null (the published v1.6 configs) means "none"; transformers 5 warns on the key.
    config = config_cls.from_dict(
        {k: v for k, v in raw.items() if k != "model_type" and not (k == "rope_scaling" and v is None)}
    )
    vcfg, proc_settings, source = resolve_vision_config(config, model_path, vision_tower_path)
    logger.info("vision tower config from %s", source)
    config.mm_vision_config = vision_config_dict(vcfg)
    model = model_cls.from_pretrained(model_path, config=config, dtype=dtype, attn_implementation=attn, **load_kwargs)
    model.set_tower_attn_implementation(attn)
    if "device_map" not in load_kwargs:  # a dispatched model stays where accelerate put it
        model.to(dev)
    else:
        _check_placement(model)
    model.eval()
    model.compressor = compressor  # checked against the tower (ratio, scoring layer) here
    image_processor = build_image_processor(proc_settings)
    context_len = getattr(model.config, "max_sequence_length", 2048)
    return tokenizer, model, image_processor, context_len


__all__ = ["DTYPES", "as_compressor", "load_pretrained_model", "load_tokenizer", "parse_dtype", "quantization_config"]
