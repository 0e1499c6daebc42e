"""GlobalCom² and its peers on transformers' own VLM classes — no fork, no patched classes.

>>> from llava.compression import build_compressor
>>> import llava.hf
>>> comp = build_compressor("globalcom2", retention_ratio=0.25)
>>> inputs = processor(images=image, text=prompt, return_tensors="pt")
>>> kwargs, records = llava.hf.prepare_inputs(model, comp, **inputs)   # model(**kwargs), model.generate(**kwargs)
>>> ids = llava.hf.generate(model, comp, **inputs, max_new_tokens=64)  # original prompt ids + new tokens
>>> records[0].info(), records[0].kept

Supported: ``LlavaNextForConditionalGeneration``, ``LlavaOnevisionForConditionalGeneration``,
``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration`` (one module per
family: :mod:`.llava_next`, :mod:`.onevision`, :mod:`.qwen2_vl`; the shared core in
:mod:`.core`). With ``budget="exact"``, :func:`install` makes the stock
``model.generate(**processor(...))`` run compressed (:mod:`.install`). Videos (OneVision,
Qwen2-VL, Qwen2.5-VL) go through the same calls, one record per video; :mod:`.video` builds
their inputs without torchvision (``read_video``, ``VideoProcessor``) and :mod:`.processors` loads a
checkpoint's processor where transformers cannot build its video processor (``load_processor``).
"""

from . import llava_next, onevision, qwen2_vl  # noqa: F401  (registers the families, in this order)
from .core import (
    Adapter,
    adapter_for,
    generate,
    llm_pruning,
    prepare_inputs,
    resolved_config,
    supported_classes,
)
from .install import install, installed, uninstall

__all__ = [
    "Adapter", "adapter_for", "generate", "install", "installed", "llm_pruning", "prepare_inputs", "resolved_config",
    "supported_classes", "uninstall",
]
