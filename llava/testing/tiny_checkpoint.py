"""Write a tiny random LLaVA-NeXT checkpoint in the original format.

``python -m llava.testing.tiny_checkpoint OUT_DIR [--arch llama|mistral] [--seed N]``

Real geometry where it matters — 336 px views, patch 14 (24×24 = 576 tokens per view), the
v1.6 pinpoints, ``spatial_unpad`` + ``anyres`` — with tiny widths and depths. The folder holds
what a real ``liuhaotian/llava-v1.6-*`` folder holds: ``config.json`` with the original keys,
sharded safetensors with the original weight names, a SentencePiece ``tokenizer.model`` with
the original ``tokenizer_config.json`` (trained locally with the ``sentencepiece`` library), plus the CLIP tower's config and image-processor settings in
``clip_vision_tower/`` (which ``mm_vision_tower`` names). Nothing touches the network.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

V16_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]

_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: ASSISTANT: What is shown in the image? Describe the picture in detail.",
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "Is there a cat in the image? Please answer yes or no. Yes No Unanswerable",
    "Reference OCR token: Hint: Options: A. B. C. D. E. 0 1 2 3 4 5 6 7 8 9 10 100",
    "red green blue yellow black white dog cat person car tree sky table sign text",
    "How many people are there? Which color is the bus? What does the sign say?",
    "请直接回答选项字母。 问题 选项 图片",
]


def sentencepiece_model(vocab_size: int = 600, corpus: list[str] | None = None) -> bytes:
    """A small byte-fallback BPE SentencePiece model with Llama's settings (ids 0/1/2 =
    ``<unk>``/``<s>``/``</s>``, dummy prefix, spaces kept), trained in-process."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter((corpus or _CORPUS) * 20), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True, character_coverage=1.0, minloglevel=2,
        add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        split_digits=True, allow_whitespace_only_pieces=True,
    )
    return buf.getvalue()


def tokenizer_config(padding_side: str = "right", legacy: bool = False) -> dict:
    """``tokenizer_config.json`` as the ``liuhaotian/llava-v1.6-*`` checkpoints write it."""
    return {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "clean_up_tokenization_spaces": False,
        "eos_token": "</s>", "legacy": legacy, "model_max_length": 4096, "pad_token": "<unk>",
        "padding_side": padding_side, "sp_model_kwargs": {}, "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>", "use_default_system_prompt": False,
    }


def write_tokenizer(
    out_dir: str, padding_side: str = "right", legacy: bool = False, sp_model: bytes | None = None
) -> str:
    """Write ``tokenizer.model`` (``sp_model``, by default :func:`sentencepiece_model`'s),
    ``tokenizer_config.json`` and ``special_tokens_map.json``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
        f.write(sp_model if sp_model is not None else sentencepiece_model())
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(padding_side, legacy), f, indent=2)
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>"}, f, indent=2)
    return out_dir


def build_tokenizer(out_dir: str | None = None):
    """The tiny checkpoints' tokenizer (a SentencePiece model, loaded like the originals')."""
    import tempfile

    from llava.model.tokenizer import load_tokenizer

    return load_tokenizer(write_tokenizer(out_dir or tempfile.mkdtemp(prefix="tiny-tok-")))


def tiny_config(arch: str, vocab_size: int) -> dict:
    """``config.json`` with the original LLaVA-NeXT keys and tiny LLM sizes."""
    cfg = {
        "architectures": ["LlavaMistralForCausalLM" if arch == "mistral" else "LlavaLlamaForCausalLM"],
        "model_type": "llava_mistral" if arch == "mistral" else "llava",
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2 if arch == "mistral" else 4, "hidden_act": "silu",
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "vocab_size": vocab_size, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "tie_word_embeddings": False, "torch_dtype": "float32",
        "mm_vision_tower": "clip_vision_tower", "mm_hidden_size": 32,
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "mm_projector_type": "mlp2x_gelu", "mm_patch_merge_type": "spatial_unpad",
        "image_aspect_ratio": "anyres", "image_grid_pinpoints": V16_PINPOINTS,
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "tokenizer_model_max_length": 4096, "tokenizer_padding_side": "right", "use_cache": True,
    }
    if arch == "mistral":
        cfg["sliding_window"] = None
    return cfg


TINY_CLIP = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
    image_size=336, patch_size=14, projection_dim=16, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)


def write_tiny_checkpoint(out_dir: str, arch: str = "llama", seed: int = 0) -> str:
    """Write the checkpoint and return ``out_dir``."""
    from transformers import CLIPVisionConfig

    from llava.convert import write_sharded
    from llava.model.multimodal_encoder.builder import default_processor_settings, vision_config_dict

    if arch not in ("llama", "mistral"):
        raise ValueError(f"--arch must be llama or mistral, got {arch!r}")
    os.makedirs(os.path.join(out_dir, "clip_vision_tower"), exist_ok=True)
    tokenizer = build_tokenizer(out_dir)
    if arch == "mistral":  # the v1.6 Mistral checkpoint pads on the left
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
            json.dump(tokenizer_config("left"), f, indent=2)
    raw = tiny_config(arch, len(tokenizer))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(raw, f, indent=2)
    vcfg = CLIPVisionConfig(**TINY_CLIP)
    vdict = vision_config_dict(vcfg)
    with open(os.path.join(out_dir, "clip_vision_tower", "config.json"), "w") as f:
        json.dump(vdict, f, indent=2)
    with open(os.path.join(out_dir, "clip_vision_tower", "preprocessor_config.json"), "w") as f:
        json.dump(default_processor_settings(336), f, indent=2)

    model = random_model(raw, vdict, seed)
    state = to_original_names(model.state_dict())
    write_sharded(state, out_dir, max_shard_bytes=sum(t.numel() * t.element_size() for t in state.values()) // 2)
    return out_dir


def random_model(raw: dict, vision: dict, seed: int = 0):
    """A LLaVA model built from a ``config.json`` dict and a CLIP vision config dict, with
    random weights larger than transformers' init, so that attention, [CLS] scores and logits
    are far from uniform (otherwise every compression method would look alike)."""
    from llava.model import LlavaConfig, LlavaLlamaForCausalLM, LlavaMistralConfig, LlavaMistralForCausalLM
    from llava.model.multimodal_encoder.builder import vision_config_dict

    mistral = "Mistral" in (raw.get("architectures") or [""])[0]
    config_cls, model_cls = (LlavaMistralConfig, LlavaMistralForCausalLM) if mistral else (LlavaConfig, LlavaLlamaForCausalLM)
    config = config_cls(**{k: v for k, v in raw.items() if k not in ("architectures", "model_type")})
    config.mm_vision_config = vision_config_dict(vision)
    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, _weight_scale(name) / p.shape[-1] ** 0.5)
            elif name.endswith("image_newline"):
                p.normal_(0.0, 1.0)
        # Every text token shares one direction that image tokens lack, so a text position's
        # attention reaches the question among ~2000 visual tokens: answers depend on the prompt.
        emb = model.get_model().embed_tokens.weight
        shared = torch.randn(emb.shape[1], generator=torch.Generator().manual_seed(seed))
        emb += LLM_TEXT_DIRECTION * shared / shared.norm() * emb.norm(dim=1, keepdim=True).mean()
    return model


def _weight_scale(name: str) -> float:
    """Init scale (× 1/√fan-in) of a weight matrix. The LLM's queries/keys and embeddings are
    larger so its attention is sharp and greedy answers depend on both the image and the
    prompt (a near-uniform attention over ~2000 visual tokens would answer everything alike)."""
    if "vision_tower" in name or "mm_projector" in name:
        return 0.5
    if name.endswith(("q_proj.weight", "k_proj.weight")):
        return LLM_QK_SCALE
    if name.endswith(("v_proj.weight", "o_proj.weight")):
        return LLM_VO_SCALE
    if name.endswith("embed_tokens.weight"):
        return LLM_EMBED_SCALE
    return 0.5


LLM_QK_SCALE = 3.0
LLM_VO_SCALE = 4.0
LLM_TEXT_DIRECTION = 2.0
LLM_EMBED_SCALE = 1.0


def to_original_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our module names → the original checkpoints' (CLIP weights under ``vision_model.``)."""
    out = {}
    prefix = "model.vision_tower.vision_tower."
    for k, v in state.items():
        if "rotary_emb" in k:
            continue
        if k.startswith(prefix) and not k.startswith(prefix + "vision_model."):
            k = prefix + "vision_model." + k[len(prefix):]
        out[k] = v
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--arch", choices=["llama", "mistral"], default="llama")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    write_tiny_checkpoint(args.out_dir, args.arch, args.seed)
    print(f"wrote tiny {args.arch} checkpoint to {args.out_dir}")


if __name__ == "__main__":
    main()
