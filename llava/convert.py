"""Convert LLaVA-NeXT checkpoints between the original format and transformers' format.

``python -m llava.convert to-hf SRC DST`` turns an original ``llava-v1.6-*`` folder into one
that transformers' stock pipeline uses like a published ``llava-hf`` folder
(``AutoProcessor.from_pretrained(DST)(images=..., text=...)`` and
``LlavaNextForConditionalGeneration.from_pretrained(DST)``: ``architectures``, a
``LlavaNextProcessor`` with ``processor_config.json``/``preprocessor_config.json``
(``do_pad``), a chat template rendering the original prompt, ``generation_config.json``);
``python -m llava.convert to-original SRC DST`` goes back.

What the conversion takes care of:

- weight names (:data:`ORIGINAL_TO_HF`, and transformers 4.x and 5.x save layouts);
- the LLM settings, all of them (``rope_theta``, which transformers 5 keeps in
  ``rope_parameters``, ``sliding_window``, …), and the original-only keys;
- vocabulary: ``to-hf`` adds ``<image>`` and ``<pad>`` to the tokenizer (as llava-hf did) and
  rows to ``embed_tokens``/``lm_head`` (the mean of the others), the vocabulary padded to a
  multiple of 64; ``to-original`` keeps every row, so the pad id stays a valid row;
- pinpoints: the original reads ``image_grid_pinpoints`` as (width, height), transformers
  as (height, width); each pair is swapped so both choose the same grid;
- the round trip: each direction stores the source's small files (config, tokenizer,
  generation and processor configs) in ``DST/conversion_source/``; converting back restores
  them verbatim and cuts the vocabulary to the source's, so original → hf → original and
  hf → original → hf give back the same configs, tokenizer files and tensors.

Weights are streamed: tensors are read one at a time from memory-mapped input files and
output shards are written as soon as they are full (``--max-shard-size``). The process's own
(anonymous) memory stays near that of its imports plus the embedding matrices; its RSS also
counts mapped pages of the input files, which the kernel can drop (measured by
``benchmarks/convert_memory.py``; figures in the README).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from llava.utils import read_json

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
EMBEDDINGS = {"original": ("model.embed_tokens.weight", "lm_head.weight"),
              "hf": ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight")}

#: Where each direction keeps the source's small files, for the way back.
STASH = "conversion_source"
_SMALL_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "chat_template.json", "chat_template.jinja",
    "processor_config.json", "preprocessor_config.json",
    "clip_vision_tower/config.json", "clip_vision_tower/preprocessor_config.json",
)
#: Keys of ``text_config`` that are not LLM settings of the original config.
_TEXT_ONLY = {"architectures", "_name_or_path", "model_type", "dtype", "torch_dtype", "transformers_version",
              "rope_parameters", "output_hidden_states", "return_dict", "tie_word_embeddings", "use_cache"}
_KNOWN_TOWER = "openai/clip-vit-large-patch14-336"

# Chat templates that render exactly the prompts of the original templates (llava_v1 for
# Vicuna, mistral_instruct for Mistral), images first as the original's get_prompt does.
_JINJA_PARTS = (
    "{% for c in m['content'] if c['type'] == 'image' %}{{ '<image>\\n' }}{% endfor %}"
    "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}"
)
CHAT_TEMPLATES = {
    "llama": (
        "{{ 'A chat between a curious human and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the human\\'s questions. ' }}"
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ 'USER: ' }}" + _JINJA_PARTS + "{{ ' ' }}"
        "{% else %}{{ 'ASSISTANT: ' }}" + _JINJA_PARTS + "{{ '</s>' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
    ),
    "mistral": (
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' }}" + _JINJA_PARTS + "{{ ' [/INST]' }}"
        "{% else %}{{ ' ' }}" + _JINJA_PARTS + "{{ ' </s>' }}{% endif %}{% endfor %}"
    ),
}


def rename(key: str, table: list[tuple[str, str]]) -> str:
    for pattern, repl in table:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key, count=1)
    raise KeyError(f"no mapping for weight {key!r}")


def _hf_canonical(key: str) -> str:
    """transformers 5 save layout → the 4.x llava-hf names :data:`HF_TO_ORIGINAL` reads."""
    key = re.sub(r"^model\.language_model\.", "language_model.model.", key)
    key = re.sub(r"^model\.(vision_tower|multi_modal_projector|image_newline)", r"\1", key)
    key = re.sub(r"^lm_head\.", "language_model.lm_head.", key)
    return re.sub(r"^vision_tower\.(?!vision_model\.)", "vision_tower.vision_model.", key)


# ----------------------------------------------------------------------------- streaming I/O


def weight_files(folder: str) -> list[str]:
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not files:
        files = sorted(f for f in os.listdir(folder) if re.fullmatch(r"pytorch_model.*\.bin", f))
    if not files:
        raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights in {folder}")
    return [os.path.join(folder, f) for f in files]


def iter_tensors(folder: str) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` one at a time, file by file (safetensors read lazily; ``.bin`` files
    memory-mapped)."""
    for path in weight_files(folder):
        if path.endswith(".safetensors"):
            with safe_open(path, framework="pt") as f:
                for k in f.keys():
                    yield k, f.get_tensor(k)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            yield from state.items()
            del state


def read_state_dict(folder: str) -> dict[str, torch.Tensor]:
    """All tensors of a folder in memory (for tests and small checkpoints)."""
    return dict(iter_tensors(folder))


class ShardWriter:
    """Collects tensors and writes ``model-0000i-of-0000n.safetensors`` shards as they fill
    (plus the index). ``peak_bytes`` is the most tensor data it ever held at once."""

    def __init__(self, folder: str, max_shard_bytes: int = 2 * 1024**3):
        self.folder, self.max_bytes = folder, max_shard_bytes
        self.buffer: dict[str, torch.Tensor] = {}
        self.size = self.peak_bytes = self.total = 0
        self.written: list[tuple[str, list[str]]] = []  # (temporary file, keys)
        os.makedirs(folder, exist_ok=True)

    def add(self, key: str, tensor: torch.Tensor) -> None:
        t = tensor.contiguous()
        nbytes = t.numel() * t.element_size()
        if self.buffer and self.size + nbytes > self.max_bytes:
            self._flush()
        self.buffer[key] = t
        self.size += nbytes
        self.total += nbytes
        self.peak_bytes = max(self.peak_bytes, self.size)

    def _flush(self) -> None:
        tmp = os.path.join(self.folder, f".shard-{len(self.written):05d}.safetensors")
        save_file(self.buffer, tmp, metadata={"format": "pt"})
        self.written.append((tmp, list(self.buffer)))
        self.buffer, self.size = {}, 0

    def close(self) -> list[str]:
        if self.buffer or not self.written:
            self._flush()
        n = len(self.written)
        names, weight_map = [], {}
        for i, (tmp, keys) in enumerate(self.written, 1):
            name = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            os.replace(tmp, os.path.join(self.folder, name))
            names.append(name)
            weight_map.update({k: name for k in keys})
        if n > 1:
            with open(os.path.join(self.folder, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))},
                          f, indent=2)
        return names


def write_sharded(state: dict[str, torch.Tensor], folder: str, max_shard_bytes: int = 2 * 1024**3) -> list[str]:
    """Save ``state`` as shards plus the index json."""
    writer = ShardWriter(folder, max_shard_bytes)
    for k in sorted(state):
        writer.add(k, state[k])
    return writer.close()


def _convert_weights(src: str, dst: str, name_map: Callable[[str], str | None], embeddings: tuple[str, str],
                     rows: int | None, max_shard_bytes: int) -> ShardWriter:
    """Stream ``src``'s tensors into ``dst`` under new names; the two embedding matrices are
    cut or extended (mean row) to ``rows`` rows."""
    writer = ShardWriter(dst, max_shard_bytes)
    for key, tensor in iter_tensors(src):
        new = name_map(key)
        if new is None:
            continue
        if new in embeddings and rows is not None:
            tensor = _resize_rows(tensor, rows)
        writer.add(new, tensor)
        del tensor
    writer.close()
    return writer


def _resize_rows(w: torch.Tensor, rows: int) -> torch.Tensor:
    if w.shape[0] >= rows:
        return w[:rows]
    total = torch.zeros(w.shape[1:], dtype=torch.float32)  # (hidden,)
    for block in w.split(4096):  # fp32 sums without an fp32 copy of the whole matrix (2x its size)
        total += block.float().sum(0)
    extra = (total / w.shape[0]).to(w.dtype).expand(rows - w.shape[0], -1)  # (rows - vocab, hidden)
    return torch.cat([w, extra])


# ----------------------------------------------------------------------------- small files


def _write(path: str, obj: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _stash(src: str, dst: str, fmt: str) -> None:
    """Keep ``src``'s small files in ``dst/conversion_source`` (not a nested stash)."""
    out = os.path.join(dst, STASH)
    _copy_small_files(src, out)
    _write(os.path.join(out, "conversion.json"), {"format": fmt})


def _stashed(src: str, fmt: str) -> str | None:
    """``src/conversion_source`` when it holds a checkpoint of format ``fmt``."""
    folder = os.path.join(src, STASH)
    marker = os.path.join(folder, "conversion.json")
    if os.path.isfile(marker) and read_json(marker).get("format") == fmt:
        return folder
    return None


def _copy_small_files(src: str, dst: str) -> None:
    """Copy the small files (configs, tokenizer) ``src`` holds into ``dst``."""
    for name in _SMALL_FILES:
        if os.path.isfile(os.path.join(src, name)):
            os.makedirs(os.path.dirname(os.path.join(dst, name)), exist_ok=True)
            shutil.copy2(os.path.join(src, name), os.path.join(dst, name))


def _swap_pinpoints(pins):
    return [[int(b), int(a)] for a, b in pins]


def _is_mistral(raw: dict) -> bool:
    return "Mistral" in (raw.get("architectures") or [""])[0] or raw.get("model_type") == "llava_mistral"


# ----------------------------------------------------------------------------- original → hf


def hf_config_from_original(raw: dict, vision: dict, image_id: int, pad_id: int, vocab: int) -> dict:
    """The ``LlavaNextConfig`` (as a dict) of an original ``config.json``: every LLM setting
    of the original goes to ``text_config``."""
    from transformers import LlavaNextConfig

    from llava.model.language_model.llava_llama import LlavaConfig
    from llava.model.language_model.llava_mistral import LlavaMistralConfig

    mistral = _is_mistral(raw)
    llm_keys = set((LlavaMistralConfig if mistral else LlavaConfig)().to_dict())
    text = {k: v for k, v in raw.items() if k in llm_keys and k not in _TEXT_ONLY and not k.startswith("mm_")}
    for key in ("rope_theta", "rope_scaling", "sliding_window", "head_dim"):  # v5 moves rope_* out of to_dict
        if raw.get(key) is not None:
            text[key] = raw[key]
    text.update(model_type="mistral" if mistral else "llama", vocab_size=vocab, pad_token_id=raw.get("pad_token_id"))
    text["tie_word_embeddings"] = raw.get("tie_word_embeddings", False)
    if raw.get("mm_vision_select_feature", "patch") not in ("patch", "cls_patch"):
        raise ValueError(f"mm_vision_select_feature {raw.get('mm_vision_select_feature')!r} has no llava-hf equivalent")
    cfg = LlavaNextConfig(
        vision_config={**vision, "model_type": "clip_vision_model"},
        text_config=text,
        image_grid_pinpoints=_swap_pinpoints(raw["image_grid_pinpoints"]),
        image_token_index=image_id,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default" if raw.get("mm_vision_select_feature", "patch") == "patch" else "full",
        vision_feature_layer=raw.get("mm_vision_select_layer", -2),
        use_image_newline_parameter=True,
        tie_word_embeddings=False,
        pad_token_id=pad_id,
    )
    cfg.architectures = ["LlavaNextForConditionalGeneration"]
    return cfg.to_dict()


def original_to_hf(src: str, dst: str, vision_tower_path: str | None = None,
                   max_shard_bytes: int = 2 * 1024**3) -> ShardWriter:
    """Write a transformers ``LlavaNextForConditionalGeneration`` folder from an original one."""
    from transformers import AutoTokenizer, GenerationConfig, LlavaNextProcessor

    from llava.model.language_model.llava_llama import LlavaConfig
    from llava.model.multimodal_encoder.builder import resolve_vision_config, vision_config_dict

    raw = read_json(os.path.join(src, "config.json"))
    os.makedirs(dst, exist_ok=True)
    back = _stashed(src, "hf")
    if back is not None:  # the way back from to-original: restore the llava-hf files verbatim
        rows = read_json(os.path.join(back, "config.json"))["text_config"]["vocab_size"]
        writer = _convert_weights(src, dst, _to_hf_name, EMBEDDINGS["hf"], rows, max_shard_bytes)
        _copy_small_files(back, dst)
        _stash(src, dst, "original")
        return writer

    vcfg, proc, _ = resolve_vision_config(LlavaConfig.from_pretrained(src), src, vision_tower_path)
    tok = AutoTokenizer.from_pretrained(src)  # SentencePiece → tokenizers, as llava-hf ships it
    if "<image>" not in tok.get_vocab():
        tok.add_tokens(["<image>"], special_tokens=True)
    if tok.pad_token is None or tok.pad_token == tok.unk_token:
        tok.add_special_tokens({"pad_token": "<pad>"})
    tok.padding_side = _read_tokenizer_config(src).get("padding_side", tok.padding_side)
    image_id, pad_id = tok.convert_tokens_to_ids("<image>"), tok.pad_token_id
    rows = -(-len(tok) // 64) * 64
    hf = hf_config_from_original(raw, vision_config_dict(vcfg), image_id, pad_id, rows)
    _write(os.path.join(dst, "config.json"), hf)
    writer = _convert_weights(src, dst, _to_hf_name, EMBEDDINGS["hf"], rows, max_shard_bytes)

    from transformers import LlavaNextImageProcessor

    keep = {k: v for k, v in proc.items() if k not in ("image_processor_type", "processor_class", "feature_extractor_type")}
    image_processor = LlavaNextImageProcessor(**keep, image_grid_pinpoints=hf["image_grid_pinpoints"], do_pad=True)
    family = "mistral" if _is_mistral(raw) else "llama"
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=vcfg.patch_size,
        vision_feature_select_strategy=hf["vision_feature_select_strategy"], chat_template=CHAT_TEMPLATES[family],
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(dst)
    if not os.path.isfile(os.path.join(dst, "preprocessor_config.json")):  # as the published folders have it
        image_processor.save_pretrained(dst)
    gen_file = os.path.join(src, "generation_config.json")
    gen = GenerationConfig.from_pretrained(src) if os.path.isfile(gen_file) else GenerationConfig(
        bos_token_id=raw.get("bos_token_id", 1), eos_token_id=raw.get("eos_token_id", 2))
    gen.pad_token_id = pad_id
    gen.save_pretrained(dst)
    _stash(src, dst, "original")
    return writer


def _to_hf_name(key: str) -> str | None:
    return None if "rotary_emb.inv_freq" in key else rename(key, ORIGINAL_TO_HF)


def _read_tokenizer_config(folder: str) -> dict:
    path = os.path.join(folder, "tokenizer_config.json")
    return read_json(path) if os.path.isfile(path) else {}


# ----------------------------------------------------------------------------- hf → original


def original_config_from_hf(hf: dict, padding_side: str = "right") -> dict:
    """An original ``config.json`` of a ``LlavaNextConfig`` dict: every LLM setting (``rope_theta``
    out of ``rope_parameters``, ``sliding_window``, …), the vocabulary as it is (so the pad id
    stays a row), the original multimodal keys."""
    from transformers import LlavaNextConfig

    cfg = LlavaNextConfig(**{k: v for k, v in hf.items() if k != "model_type"})
    text, vision = cfg.text_config, cfg.vision_config
    mistral = text.model_type == "mistral"
    t = text.to_dict()
    raw = {k: v for k, v in t.items() if k not in _TEXT_ONLY and not k.startswith("_") and k not in ("id2label", "label2id")}
    rope = t.get("rope_parameters") or {}
    if rope.get("rope_theta") is not None:
        raw["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") != "default":
        raw["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    pad = hf.get("pad_token_id", t.get("pad_token_id"))
    known = _is_known_tower(vision)
    raw.update(
        architectures=["LlavaMistralForCausalLM" if mistral else "LlavaLlamaForCausalLM"],
        model_type="llava_mistral" if mistral else "llava",
        vocab_size=text.vocab_size,
        pad_token_id=pad,
        tie_word_embeddings=False,
        mm_vision_tower=_KNOWN_TOWER if known else "clip_vision_tower",
        mm_hidden_size=vision.hidden_size,
        mm_vision_select_layer=cfg.vision_feature_layer,
        mm_vision_select_feature="patch" if cfg.vision_feature_select_strategy == "default" else "cls_patch",
        mm_projector_type="mlp2x_gelu",
        mm_patch_merge_type="spatial_unpad",
        image_aspect_ratio="anyres",
        image_grid_pinpoints=_swap_pinpoints(cfg.image_grid_pinpoints),
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        tokenizer_model_max_length=4096,
        tokenizer_padding_side=padding_side,
        use_mm_proj=True,
    )
    return raw


def _is_known_tower(vision) -> bool:
    from llava.model.multimodal_encoder.builder import _KNOWN_TOWERS

    geo = _KNOWN_TOWERS[_KNOWN_TOWER]
    return all(getattr(vision, k, None) == v for k, v in geo.items())


def hf_to_original(src: str, dst: str, max_shard_bytes: int = 2 * 1024**3) -> ShardWriter:
    """Write an original-format LLaVA-NeXT folder from a transformers (``llava-hf``) one."""
    from transformers import LlavaNextConfig

    from llava.model.multimodal_encoder.builder import default_processor_settings, vision_config_dict

    hf = read_json(os.path.join(src, "config.json"))
    os.makedirs(dst, exist_ok=True)

    def name_map(k: str) -> str | None:
        return None if "rotary_emb.inv_freq" in k else rename(_hf_canonical(k), HF_TO_ORIGINAL)

    back = _stashed(src, "original")
    if back is not None:  # the way back from to-hf: restore the original files verbatim
        rows = read_json(os.path.join(back, "config.json"))["vocab_size"]
        writer = _convert_weights(src, dst, name_map, EMBEDDINGS["original"], rows, max_shard_bytes)
        _copy_small_files(back, dst)
        _stash(src, dst, "hf")
        return writer

    padding_side = _read_tokenizer_config(src).get("padding_side", "right")
    raw = original_config_from_hf(hf, padding_side)
    if raw.get("pad_token_id") is None:  # llava-hf Mistral names its <pad> in the tokenizer only
        from llava.model.tokenizer import load_tokenizer

        raw["pad_token_id"] = load_tokenizer(src).pad_token_id
    vision = LlavaNextConfig(**{k: v for k, v in hf.items() if k != "model_type"}).vision_config
    if raw["mm_vision_tower"] == "clip_vision_tower":  # not the published CLIP-L/14-336: ship its config
        _write(os.path.join(dst, "clip_vision_tower", "config.json"), vision_config_dict(vision))
        proc = default_processor_settings(vision.image_size)
        proc_src = os.path.join(src, "preprocessor_config.json")
        if os.path.isfile(proc_src):
            given = read_json(proc_src)
            proc.update({k: given[k] for k in ("image_mean", "image_std", "size", "crop_size") if k in given})
        _write(os.path.join(dst, "clip_vision_tower", "preprocessor_config.json"), proc)
    _write(os.path.join(dst, "config.json"), raw)
    writer = _convert_weights(src, dst, name_map, EMBEDDINGS["original"], None, max_shard_bytes)
    for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                 "added_tokens.json", "generation_config.json"):
        if os.path.isfile(os.path.join(src, name)):
            shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
    _stash(src, dst, "hf")
    return writer


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("direction", choices=["to-hf", "to-original"])
    ap.add_argument("src", help="source checkpoint folder")
    ap.add_argument("dst", help="output folder")
    ap.add_argument("--vision-tower-path", help="local CLIP folder (to-hf only, if the checkpoint needs one)")
    ap.add_argument("--max-shard-size", type=float, default=2.0, help="output shard size in GiB (default 2)")
    args = ap.parse_args(argv)
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise SystemExit("error: src and dst must differ")
    shard = int(args.max_shard_size * 1024**3)
    try:
        if args.direction == "to-hf":
            writer = original_to_hf(args.src, args.dst, args.vision_tower_path, shard)
        else:
            writer = hf_to_original(args.src, args.dst, shard)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {args.dst} ({writer.total / 1e9:.2f} GB of tensors, at most {writer.peak_bytes / 1e9:.2f} GB held)")


if __name__ == "__main__":
    main()
