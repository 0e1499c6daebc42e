"""Random LLaVA-NeXT models built in memory for benchmarking, and a real checkpoint loader.

Every profile keeps the real AnyRes geometry (336 px views, patch 14 → 24×24 = 576 tokens per
view, the v1.6 pinpoints, ``spatial_unpad``), so the visual-token counts are the real ones
(672×672 → 2928, 1000×600 → 1948). Only widths and depths are scaled down:

* ``tiny``  — the test checkpoint's sizes (``llava.testing.tiny_checkpoint``), for the test suite;
* ``bench`` — an LLM big enough that prefill dominates on a CPU (12 layers, hidden 1024, MLP
  2752, 16 heads; 7B is 32 × 4096 / 11008) and a 6-layer, 512-wide CLIP tower (CLIP-L/14-336
  is 24 × 1024);
* ``bench-clipl`` — the ``bench`` LLM with the full CLIP-L/14-336 tower geometry.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from llava.testing.tiny_checkpoint import TINY_CLIP, build_tokenizer, random_model, tiny_config

CLIP_L_336 = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
    image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)


@dataclass(frozen=True)
class Profile:
    name: str
    llm: dict[str, Any]  # overrides of tiny_config's LLM sizes
    vision: dict[str, Any]  # CLIPVisionConfig kwargs
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    "tiny": Profile("tiny", {}, dict(TINY_CLIP), "tiny test sizes: LLM 2 x 64, CLIP 3 x 32"),
    "bench": Profile(
        "bench",
        dict(hidden_size=1024, intermediate_size=2752, num_hidden_layers=12, num_attention_heads=16,
             num_key_value_heads=16),
        {**CLIP_L_336, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 6,
         "num_attention_heads": 8, "projection_dim": 512},
        "scaled-down random model: LLM 12 layers x 1024 (MLP 2752, 16 heads); CLIP tower 6 layers x 512 "
        "(8 heads, MLP 2048) instead of CLIP-L/14-336's 24 x 1024; real 336/14 AnyRes geometry",
    ),
    "bench-clipl": Profile(
        "bench-clipl",
        dict(hidden_size=1024, intermediate_size=2752, num_hidden_layers=12, num_attention_heads=16,
             num_key_value_heads=16),
        dict(CLIP_L_336),
        "scaled-down random LLM (12 layers x 1024, MLP 2752, 16 heads) with the full CLIP-L/14-336 tower "
        "geometry (24 layers x 1024, 16 heads); real 336/14 AnyRes geometry",
    ),
}


def profile_config(profile: str | Profile, vocab_size: int) -> tuple[dict, dict]:
    """``(llava config.json dict, CLIP vision config dict)`` of a profile."""
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    raw = tiny_config("llama", vocab_size)
    raw.update(prof.llm)
    vision = dict(prof.vision)
    raw["mm_hidden_size"] = vision["hidden_size"]
    return raw, vision


def build_profile_model(profile: str, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0):
    """A random LLaVA-NeXT (Llama) built in memory → ``(tokenizer, model, image_processor, note)``."""
    from transformers import CLIPVisionConfig

    from llava.model.multimodal_encoder.builder import build_image_processor, default_processor_settings

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    tokenizer = build_tokenizer()
    raw, vision = profile_config(profile, len(tokenizer))
    model = random_model(raw, CLIPVisionConfig(**vision).to_dict(), seed)
    model.to(device=device, dtype=dtype).eval()
    processor = build_image_processor(default_processor_settings(vision["image_size"]))
    return tokenizer, model, processor, PROFILES[profile].note


def load_checkpoint(model_path: str, dtype: torch.dtype, device: str):
    """A real local checkpoint through :func:`llava.model.builder.load_pretrained_model`."""
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(
        model_path, None, get_model_name_from_path(model_path), device=device, dtype=dtype
    )
    return tokenizer, model, processor, f"checkpoint {model_path}"


def describe_model(model) -> dict[str, Any]:
    """Sizes of the LLM and the vision tower (for the JSON output)."""
    cfg = model.config
    tower = model.get_vision_tower()
    vc = tower.config
    n_llm = sum(p.numel() for n, p in model.named_parameters() if "vision_tower" not in n)
    n_vis = sum(p.numel() for p in tower.parameters())
    return {
        "llm": {
            "num_hidden_layers": cfg.num_hidden_layers, "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size, "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": getattr(cfg, "num_key_value_heads", cfg.num_attention_heads),
            "vocab_size": cfg.vocab_size, "parameters": n_llm,
        },
        "vision": {
            "num_hidden_layers": vc.num_hidden_layers, "hidden_size": vc.hidden_size,
            "intermediate_size": vc.intermediate_size, "num_attention_heads": vc.num_attention_heads,
            "image_size": vc.image_size, "patch_size": vc.patch_size, "parameters": n_vis,
            "select_layer": tower.select_layer,
        },
        "image_grid_pinpoints": copy.deepcopy(cfg.image_grid_pinpoints),
    }
