"""Finding the vision tower's configuration and image-processor settings — offline.

The original checkpoints name their tower (``mm_vision_tower``) but carry only its weights;
its config lived on the hub. We never go there when a local path is given: the config comes,
in this order, from an explicit ``vision_tower_path``, from ``mm_vision_config`` saved in the
checkpoint's own ``config.json``, from a local folder named by ``mm_vision_tower`` (absolute or
relative to the checkpoint), or from the published geometry of the OpenAI CLIP towers LLaVA
uses. Anything else is a clear error naming what was looked for.
"""

from __future__ import annotations

import json
import os

from transformers import CLIPVisionConfig

from llava.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .clip_encoder import CLIPVisionTower

# Published geometry of the towers LLaVA uses (facts from their model cards/configs).
_KNOWN_TOWERS = {
    "openai/clip-vit-large-patch14-336": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    ),
    "openai/clip-vit-large-patch14": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    ),
}


class VisionTowerNotFound(FileNotFoundError):
    pass


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from e


def _vision_dict(raw: dict) -> dict:
    # A full CLIPConfig nests the vision part; a CLIPVisionConfig is flat.
    return raw.get("vision_config", raw)


def vision_config_dict(config) -> dict:
    """A CLIP vision config (object or dict) as plain JSON keys: no private fields and no
    provenance (version, architectures, dtype) — what ``mm_vision_config`` and
    ``clip_vision_tower/config.json`` hold."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    drop = {"transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype"}
    return {k: v for k, v in d.items() if k not in drop and not k.startswith("_")}


def _clean(d: dict) -> dict:
    """Keyword arguments for ``CLIPVisionConfig`` from a stored config dict."""
    return {k: v for k, v in vision_config_dict(d).items() if k != "model_type"}


def resolve_vision_config(model_cfg, model_path: str | None = None, vision_tower_path: str | None = None):
    """Return ``(CLIPVisionConfig, processor_dict, source)`` for a LLaVA config without
    touching the network. ``processor_dict`` holds CLIP image-processor settings."""
    name = getattr(model_cfg, "mm_vision_tower", None) or getattr(model_cfg, "vision_tower", None)
    looked: list[str] = []
    candidates: list[str] = []
    if vision_tower_path:
        candidates.append(vision_tower_path)
    saved = getattr(model_cfg, "mm_vision_config", None)
    if saved and not vision_tower_path:
        proc = default_processor_settings(saved.get("image_size", 336))
        if model_path and os.path.isfile(os.path.join(model_path, "preprocessor_config.json")):
            proc = _read_json(os.path.join(model_path, "preprocessor_config.json"))
        return CLIPVisionConfig(**_clean(saved)), proc, "config.json:mm_vision_config"
    if name:
        if os.path.isabs(name):
            candidates.append(name)
        elif model_path:
            candidates.append(os.path.join(model_path, name))
        if os.path.isdir(name):
            candidates.append(name)
    for folder in candidates:
        cfg_file = os.path.join(folder, "config.json")
        looked.append(cfg_file)
        if os.path.isfile(cfg_file):
            vcfg = _vision_dict(_read_json(cfg_file))
            proc_file = os.path.join(folder, "preprocessor_config.json")
            if not os.path.isfile(proc_file):
                raise VisionTowerNotFound(
                    f"vision tower folder {folder} has config.json but no preprocessor_config.json "
                    "(the CLIP image-processor settings)"
                )
            return CLIPVisionConfig(**_clean(vcfg)), _read_json(proc_file), folder
        if folder == vision_tower_path:
            raise VisionTowerNotFound(f"vision_tower_path {folder}: missing {cfg_file}")
    if name in _KNOWN_TOWERS:
        geo = _KNOWN_TOWERS[name]
        return CLIPVisionConfig(**geo), default_processor_settings(geo["image_size"]), f"built-in:{name}"
    raise VisionTowerNotFound(
        f"cannot find the vision tower config for mm_vision_tower={name!r}: looked for "
        f"{', '.join(looked) or '(no local folder)'} and the built-in towers {sorted(_KNOWN_TOWERS)}. "
        "Pass vision_tower_path=<folder with config.json and preprocessor_config.json>."
    )


def default_processor_settings(side: int) -> dict:
    return {
        "do_resize": True, "size": {"shortest_edge": side}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": side, "width": side},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD), "do_convert_rgb": True,
    }


def build_image_processor(settings: dict):
    """A PIL-backed CLIP image processor (the preprocessing the checkpoints were trained with)."""
    try:
        from transformers import CLIPImageProcessorPil as cls
    except ImportError:  # older transformers: the PIL processor is the default one
        from transformers import CLIPImageProcessor as cls
    keep = {k: v for k, v in settings.items() if k not in ("image_processor_type", "processor_class", "feature_extractor_type")}
    return cls(**keep)


def build_vision_tower(model_cfg) -> CLIPVisionTower:
    saved = getattr(model_cfg, "mm_vision_config", None)
    if not saved:
        raise ValueError(
            "the model config has no resolved vision tower (mm_vision_config); load the model with "
            "llava.model.builder.load_pretrained_model or call resolve_vision_config first"
        )
    vcfg = CLIPVisionConfig(**_clean(saved))
    attn = getattr(model_cfg, "_attn_implementation", None)
    if attn:
        vcfg._attn_implementation = attn
    return CLIPVisionTower(
        vcfg,
        select_layer=getattr(model_cfg, "mm_vision_select_layer", -2),
        select_feature=getattr(model_cfg, "mm_vision_select_feature", "patch"),
    )
