"""The ``lmms_eval.models`` entry point: lmms-eval calls :func:`manifests` when it builds its
model registry, so ``--model llava_gc2`` works once this package is installed."""

from __future__ import annotations


def manifests() -> list:
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=name, simple_class_path=path) for name, path in MODELS.items()]


#: lmms-eval model name → class.
MODELS: dict[str, str] = {
    "llava_gc2": "llava.lmms.llava_gc2.LlavaGC2",
    "llava_hf_gc2": "llava.lmms.hf.LlavaNextGC2",
    "llava_onevision_gc2": "llava.lmms.hf.LlavaOnevisionGC2",
    "qwen2_vl_gc2": "llava.lmms.hf.Qwen2VLGC2",
    "qwen2_5_vl_gc2": "llava.lmms.hf.Qwen2_5_VLGC2",
}
#: The models that take video files (lmms-eval passes a video as its path).
VIDEO_MODELS: tuple[str, ...] = ("llava_onevision_gc2", "qwen2_vl_gc2", "qwen2_5_vl_gc2")


def model_name(cls: type) -> str:
    """The lmms-eval name ``cls`` is registered under (its class name if none)."""
    path = f"{cls.__module__}.{cls.__qualname__}"
    return next((name for name, p in MODELS.items() if p == path), cls.__name__)
