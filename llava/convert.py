"""Convert LLaVA-NeXT checkpoints between the original format and transformers' format.

``python -m llava.convert to-hf SRC DST`` turns an original ``llava-v1.6-*`` folder into one
``LlavaNextForConditionalGeneration.from_pretrained`` loads (the ``llava-hf`` hub layout);
``python -m llava.convert to-original SRC DST`` goes back.

Differences the conversion takes care of:

- weight names (table :data:`ORIGINAL_TO_HF`);
- transformers' LLaVA-NeXT needs an ``<image>`` token in the vocabulary: it is appended to
  the tokenizer and one row is added to ``embed_tokens``/``lm_head`` (the mean of the others);
  ``to-original`` drops it again;
- pinpoints: the original code reads ``image_grid_pinpoints`` as (width, height), transformers
  as (height, width); each pair is swapped so both choose the same grid (the order of the
  candidates decides ties, e.g. a square 336×336 image gets a 1×2 grid in the original).
"""

from __future__ import annotations

import argparse
import json
import os
import re

import torch
from safetensors import safe_open
from safetensors.torch import save_file

# (regex on original names, replacement in the llava-hf layout)
ORIGINAL_TO_HF: list[tuple[str, str]] = [
    (r"^model\.vision_tower\.vision_tower\.", "vision_tower."),
    (r"^model\.mm_projector\.0\.", "multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "multi_modal_projector.linear_2."),
    (r"^model\.image_newline$", "image_newline"),
    (r"^lm_head\.", "language_model.lm_head."),
    (r"^model\.", "language_model.model."),
]
HF_TO_ORIGINAL: list[tuple[str, str]] = [
    (r"^vision_tower\.", "model.vision_tower.vision_tower."),
    (r"^multi_modal_projector\.linear_1\.", "model.mm_projector.0."),
    (r"^multi_modal_projector\.linear_2\.", "model.mm_projector.2."),
    (r"^image_newline$", "model.image_newline"),
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^language_model\.model\.", "model."),
]

_ORIGINAL_LLM_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta", "hidden_act", "bos_token_id",
    "eos_token_id", "pad_token_id", "sliding_window", "attention_bias", "tie_word_embeddings", "head_dim",
)


def rename(key: str, table: list[tuple[str, str]]) -> str:
    for pattern, repl in table:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key, count=1)
    raise KeyError(f"no mapping for weight {key!r}")


def read_state_dict(folder: str) -> dict[str, torch.Tensor]:
    """All tensors of the ``*.safetensors`` (or ``pytorch_model*.bin``) files in ``folder``."""
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    out: dict[str, torch.Tensor] = {}
    if files:
        for name in files:
            with safe_open(os.path.join(folder, name), framework="pt") as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k)
        return out
    bins = sorted(f for f in os.listdir(folder) if re.fullmatch(r"pytorch_model.*\.bin", f))
    if not bins:
        raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights in {folder}")
    for name in bins:
        out.update(torch.load(os.path.join(folder, name), map_location="cpu", weights_only=True))
    return out


def write_sharded(state: dict[str, torch.Tensor], folder: str, max_shard_bytes: int = 2 * 1024**3) -> list[str]:
    """Save ``state`` as ``model-0000i-of-0000n.safetensors`` shards plus the index json."""
    os.makedirs(folder, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(state):
        t = state[k].contiguous()
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += nbytes
    n = len(shards)
    names, weight_map, total = [], {}, 0
    for i, shard in enumerate(shards, 1):
        name = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
        save_file(shard, os.path.join(folder, name), metadata={"format": "pt"})
        names.append(name)
        for k, t in shard.items():
            weight_map[k] = name
            total += t.numel() * t.element_size()
    if n > 1:
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return names


def _swap_pinpoints(pins):
    return [[int(b), int(a)] for a, b in pins]


def original_to_hf(src: str, dst: str, vision_tower_path: str | None = None) -> None:
    """Write an HF ``LlavaNextForConditionalGeneration`` folder from an original checkpoint."""
    from transformers import AutoTokenizer, CLIPVisionConfig, LlavaNextConfig

    from llava.model.language_model.llava_llama import LlavaConfig
    from llava.model.multimodal_encoder.builder import resolve_vision_config, vision_config_dict

    with open(os.path.join(src, "config.json")) as f:
        raw = json.load(f)
    cfg = LlavaConfig.from_pretrained(src)
    vcfg, proc, _ = resolve_vision_config(cfg, src, vision_tower_path)
    tok = AutoTokenizer.from_pretrained(src)
    image_token = "<image>"
    if image_token not in tok.get_vocab():
        tok.add_tokens([image_token], special_tokens=True)
    image_id = tok.convert_tokens_to_ids(image_token)

    state = {rename(k, ORIGINAL_TO_HF): v for k, v in read_state_dict(src).items() if "rotary_emb.inv_freq" not in k}
    vocab = state["language_model.model.embed_tokens.weight"].shape[0]
    new_vocab = max(vocab, image_id + 1)
    for key in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        w = state[key]
        if w.shape[0] < new_vocab:
            extra = w.float().mean(0, keepdim=True).to(w.dtype).expand(new_vocab - w.shape[0], -1)
            state[key] = torch.cat([w, extra])

    is_mistral = "Mistral" in (raw.get("architectures") or [""])[0]
    text = {k: raw[k] for k in _ORIGINAL_LLM_KEYS if k in raw}
    text.update(model_type="mistral" if is_mistral else "llama", vocab_size=new_vocab)
    text.setdefault("tie_word_embeddings", False)
    vision = vision_config_dict(vcfg)
    vision["model_type"] = "clip_vision_model"
    hf = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**vision).to_dict(),
        text_config=text,
        image_grid_pinpoints=_swap_pinpoints(raw["image_grid_pinpoints"]),
        image_token_index=image_id,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default" if raw.get("mm_vision_select_feature", "patch") == "patch" else "full",
        vision_feature_layer=raw.get("mm_vision_select_layer", -2),
        tie_word_embeddings=False,
    )
    os.makedirs(dst, exist_ok=True)
    hf.save_pretrained(dst)
    write_sharded(state, dst)
    tok.save_pretrained(dst)
    with open(os.path.join(dst, "preprocessor_config.json"), "w") as f:
        json.dump({**proc, "image_processor_type": "LlavaNextImageProcessor",
                   "image_grid_pinpoints": hf.image_grid_pinpoints}, f, indent=2)


def hf_to_original(src: str, dst: str) -> None:
    """Write an original-format LLaVA-NeXT folder from an HF ``llava-hf`` one."""
    from transformers import AutoTokenizer, LlavaNextConfig

    from llava.model.multimodal_encoder.builder import default_processor_settings, vision_config_dict

    hf = LlavaNextConfig.from_pretrained(src)
    state = {}
    for k, v in read_state_dict(src).items():
        k = re.sub(r"^model\.language_model\.", "language_model.model.", k)  # transformers 5 save layout
        k = re.sub(r"^model\.(vision_tower|multi_modal_projector|image_newline)", r"\1", k)
        k = re.sub(r"^lm_head\.", "language_model.lm_head.", k)
        k = re.sub(r"^vision_tower\.(?!vision_model\.)", "vision_tower.vision_model.", k)
        state[rename(k, HF_TO_ORIGINAL)] = v
    image_id = hf.image_token_index
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        if state[key].shape[0] > image_id:
            state[key] = state[key][:image_id].clone()
    text, vision = hf.text_config, hf.vision_config
    is_mistral = text.model_type == "mistral"
    raw = {k: getattr(text, k) for k in _ORIGINAL_LLM_KEYS if getattr(text, k, None) is not None}
    raw.update(
        architectures=["LlavaMistralForCausalLM" if is_mistral else "LlavaLlamaForCausalLM"],
        model_type="llava_mistral" if is_mistral else "llava",
        vocab_size=image_id,
        mm_vision_tower="clip_vision_tower",
        mm_hidden_size=vision.hidden_size,
        mm_vision_select_layer=hf.vision_feature_layer,
        mm_vision_select_feature="patch" if hf.vision_feature_select_strategy == "default" else "cls_patch",
        mm_projector_type="mlp2x_gelu",
        mm_patch_merge_type="spatial_unpad",
        image_aspect_ratio="anyres",
        image_grid_pinpoints=_swap_pinpoints(hf.image_grid_pinpoints),
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        tokenizer_model_max_length=4096,
        tokenizer_padding_side="right",
    )
    os.makedirs(os.path.join(dst, "clip_vision_tower"), exist_ok=True)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(raw, f, indent=2)
    vdict = vision_config_dict(vision)
    with open(os.path.join(dst, "clip_vision_tower", "config.json"), "w") as f:
        json.dump(vdict, f, indent=2)
    proc_src = os.path.join(src, "preprocessor_config.json")
    proc = default_processor_settings(vision.image_size)
    if os.path.isfile(proc_src):
        with open(proc_src) as f:
            given = json.load(f)
        proc.update({k: given[k] for k in ("image_mean", "image_std", "size", "crop_size") if k in given})
    with open(os.path.join(dst, "clip_vision_tower", "preprocessor_config.json"), "w") as f:
        json.dump(proc, f, indent=2)
    write_sharded(state, dst)
    tok = AutoTokenizer.from_pretrained(src)
    tok.save_pretrained(dst)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("direction", choices=["to-hf", "to-original"])
    ap.add_argument("src", help="source checkpoint folder")
    ap.add_argument("dst", help="output folder")
    ap.add_argument("--vision-tower-path", help="local CLIP folder (to-hf only, if the checkpoint needs one)")
    args = ap.parse_args(argv)
    if args.direction == "to-hf":
        original_to_hf(args.src, args.dst, args.vision_tower_path)
    else:
        hf_to_original(args.src, args.dst)
    print(f"wrote {args.dst}")


if __name__ == "__main__":
    main()
