"""``llava.convert`` on fake checkpoints carrying the published ``config.json`` fields of
liuhaotian/llava-v1.6-{vicuna,mistral}-7b and llava-hf/llava-v1.6-{vicuna,mistral}-7b-hf, with
only the widths shrunk: both directions, both families, round trips, the stock pipeline."""

from __future__ import annotations

import filecmp
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import process_images, tokenizer_image_token
from llava.testing.tiny_checkpoint import TINY_CLIP, V16_PINPOINTS

PINS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, mm_hidden_size=32)

# liuhaotian/llava-v1.6-vicuna-7b/config.json (published fields; widths shrunk by SMALL, vocab by the tokenizer)
VICUNA = {
    "_name_or_path": "liuhaotian/llava-v1.6-vicuna-7b", "architectures": ["LlavaLlamaForCausalLM"],
    "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "freeze_mm_mlp_adapter": False, "freeze_mm_vision_resampler": False, "hidden_act": "silu", "hidden_size": 4096,
    "image_aspect_ratio": "anyres", "image_crop_resolution": 224, "image_grid_pinpoints": PINS,
    "image_split_resolution": 224, "initializer_range": 0.02, "intermediate_size": 11008,
    "max_position_embeddings": 4096, "mm_hidden_size": 1024, "mm_patch_merge_type": "spatial_unpad",
    "mm_projector_lr": None, "mm_projector_type": "mlp2x_gelu", "mm_resampler_type": None,
    "mm_use_im_patch_token": False, "mm_use_im_start_end": False, "mm_vision_select_feature": "patch",
    "mm_vision_select_layer": -2, "mm_vision_tower": "openai/clip-vit-large-patch14-336",
    "mm_vision_tower_lr": 2e-06, "model_type": "llava", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 32, "pad_token_id": 0, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
    "rope_theta": 10000.0, "tie_word_embeddings": False, "tokenizer_model_max_length": 4096,
    "tokenizer_padding_side": "right", "torch_dtype": "bfloat16", "transformers_version": "4.36.2",
    "tune_mm_mlp_adapter": False, "tune_mm_vision_resampler": False, "unfreeze_mm_vision_tower": True,
    "use_cache": True, "use_mm_proj": True, "vocab_size": 32000,
}
# liuhaotian/llava-v1.6-mistral-7b: the Mistral fields (GQA, rope θ 1e6, no sliding window, left padding)
MISTRAL = {
    **{k: v for k, v in VICUNA.items() if k not in ("attention_bias", "pad_token_id", "pretraining_tp", "rope_scaling")},
    "_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2", "architectures": ["LlavaMistralForCausalLM"],
    "model_type": "llava_mistral", "intermediate_size": 14336, "max_position_embeddings": 32768,
    "num_key_value_heads": 8, "rope_theta": 1000000.0, "sliding_window": None, "tokenizer_padding_side": "left",
}
# llava-hf/llava-v1.6-{mistral,vicuna}-7b-hf/config.json
HF_MISTRAL = {
    "architectures": ["LlavaNextForConditionalGeneration"], "ignore_index": -100, "image_grid_pinpoints": PINS,
    "image_token_index": 32000, "model_type": "llava_next", "projector_hidden_act": "gelu",
    "text_config": {
        "_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2", "architectures": ["MistralForCausalLM"],
        "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
        "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None,
        "torch_dtype": "bfloat16", "vocab_size": 32064,
    },
    "torch_dtype": "float16", "transformers_version": "4.39.0.dev0", "use_image_newline_parameter": True,
    "vision_config": {
        "hidden_size": 1024, "image_size": 336, "intermediate_size": 4096, "model_type": "clip_vision_model",
        "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768,
        "vocab_size": 32000,
    },
    "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064,
}
HF_VICUNA = {
    **HF_MISTRAL, "pad_token_id": 32001,
    "text_config": {
        "_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"],
        "max_position_embeddings": 4096, "model_type": "llama", "pad_token_id": 0, "rms_norm_eps": 1e-05,
        "torch_dtype": "float16", "vocab_size": 32064,
    },
}


def _image(size=(1000, 600), seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _shrunk_original(base: dict, vocab: int) -> dict:
    raw = {**base, **SMALL, "vocab_size": vocab, "torch_dtype": "float32"}
    raw["num_key_value_heads"] = 2 if "Mistral" in base["architectures"][0] else 4
    return raw


@pytest.fixture(scope="module")
def published_original(tmp_path_factory):
    """{family: (folder, tower folder)} with the published original config.json fields."""
    from transformers import CLIPVisionConfig

    from llava.convert import write_sharded
    from llava.model.multimodal_encoder.builder import default_processor_settings, vision_config_dict
    from llava.testing.tiny_checkpoint import (
        build_tokenizer,
        random_model,
        to_original_names,
        tokenizer_config,
    )

    out = {}
    tower = str(tmp_path_factory.mktemp("tower"))
    vdict = vision_config_dict(CLIPVisionConfig(**TINY_CLIP))
    with open(os.path.join(tower, "config.json"), "w") as f:
        json.dump(vdict, f)
    with open(os.path.join(tower, "preprocessor_config.json"), "w") as f:
        json.dump(default_processor_settings(336), f)
    for family, base in (("vicuna", VICUNA), ("mistral", MISTRAL)):
        d = str(tmp_path_factory.mktemp(f"orig-{family}"))
        tok = build_tokenizer(d)
        raw = _shrunk_original(base, len(tok))
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump(tokenizer_config(raw["tokenizer_padding_side"]), f)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(raw, f, indent=2)
        state = to_original_names(random_model(raw, vdict, seed=3).state_dict())
        write_sharded(state, d, max_shard_bytes=200_000)
        out[family] = (d, tower)
    return out


def _logits_ours_vs_hf(ours_folder, hf_folder, tower=None):
    from transformers import LlavaNextForConditionalGeneration

    from llava.model.builder import load_pretrained_model

    tok, model, proc, _ = load_pretrained_model(ours_folder, None, "x", device="cpu", vision_tower_path=tower)
    hf = LlavaNextForConditionalGeneration.from_pretrained(hf_folder, dtype=torch.float32).eval()
    img = _image()
    ids = tokenizer_image_token("USER: <image>\nWhat is it? ASSISTANT:", tok, return_tensors="pt")[None]
    px = process_images([img], proc, model.config)
    with torch.no_grad():
        ours = model(input_ids=ids, images=px, image_sizes=[img.size]).logits
        n = model.last_images[0].index.shape[0]
        pos = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero())
        hf_ids = torch.cat([ids[0, :pos], torch.full((n,), hf.config.image_token_index), ids[0, pos + 1 :]])
        theirs = hf(input_ids=hf_ids[None], pixel_values=px, image_sizes=torch.tensor([[600, 1000]])).logits
    return ours, theirs[..., : ours.shape[-1]], model, hf


@pytest.mark.parametrize("family", ["vicuna", "mistral"])
def test_to_hf_works_with_the_stock_pipeline(published_original, family, tmp_path):
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    from llava.conversation import build_chat_prompt, default_conv_mode

    src, tower = published_original[family]
    out = str(tmp_path / "hf")
    from llava.convert import original_to_hf

    original_to_hf(src, out, vision_tower_path=tower)
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["architectures"] == ["LlavaNextForConditionalGeneration"]
    text = cfg["text_config"]
    theta = (text.get("rope_parameters") or {}).get("rope_theta", text.get("rope_theta"))
    assert theta == (1e6 if family == "mistral" else 1e4)
    assert text["vocab_size"] % 64 == 0 and cfg["pad_token_id"] < text["vocab_size"]
    for name in ("processor_config.json", "preprocessor_config.json", "generation_config.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    processor = AutoProcessor.from_pretrained(out)
    assert type(processor).__name__ == "LlavaNextProcessor" and processor.image_processor.do_pad
    assert processor.tokenizer.padding_side == ("left" if family == "mistral" else "right")
    # The chat template renders the original template's prompt.
    mode = default_conv_mode(f"llava-v1.6-{family}-7b")
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    rendered = processor.apply_chat_template(msgs, add_generation_prompt=True)
    assert rendered == build_chat_prompt("What is it?", type("C", (), {"mm_use_im_start_end": False})(), mode)
    model = LlavaNextForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
    inputs = processor(images=_image(), text=rendered, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
    ours, theirs, *_ = _logits_ours_vs_hf(src, out, tower)
    assert (ours - theirs).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", ["vicuna", "mistral"])
def test_original_to_hf_to_original_is_lossless(published_original, family, tmp_path):
    from llava.convert import hf_to_original, original_to_hf

    src, tower = published_original[family]
    original_to_hf(src, str(tmp_path / "hf"), vision_tower_path=tower, max_shard_bytes=300_000)
    hf_to_original(str(tmp_path / "hf"), str(tmp_path / "back"))
    _assert_same_checkpoint(src, str(tmp_path / "back"), ("config.json", "tokenizer.model", "tokenizer_config.json",
                                                          "special_tokens_map.json"))


def _assert_same_checkpoint(a: str, b: str, files):
    from llava.convert import read_state_dict

    for name in files:
        assert json.load(open(os.path.join(a, name))) == json.load(open(os.path.join(b, name))) if name.endswith(
            ".json") else filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
    sa, sb = read_state_dict(a), read_state_dict(b)
    assert set(sa) == set(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def published_hf(published_original, tmp_path_factory):
    """{family: folder} in the llava-hf layout with the published llava-hf config.json fields."""
    from transformers import AutoTokenizer, LlavaNextConfig, LlavaNextForConditionalGeneration

    from llava.convert import read_state_dict

    out = {}
    for family, base in (("vicuna", HF_VICUNA), ("mistral", HF_MISTRAL)):
        d = str(tmp_path_factory.mktemp(f"hf-{family}"))
        tok = AutoTokenizer.from_pretrained(published_original[family][0])
        tok.add_tokens(["<image>"], special_tokens=True)
        tok.add_special_tokens({"pad_token": "<pad>"})
        tok.save_pretrained(d)
        vocab = -(-len(tok) // 64) * 64
        text = {**base["text_config"], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2 if family == "mistral" else 4, "vocab_size": vocab}
        raw = {**base, "text_config": text, "vision_config": {**base["vision_config"], **TINY_CLIP},
               "vocab_size": vocab, "image_token_index": tok.convert_tokens_to_ids("<image>")}
        if "pad_token_id" in raw:
            raw["pad_token_id"] = tok.pad_token_id
        torch.manual_seed(4)
        cfg = LlavaNextConfig(**{k: v for k, v in raw.items() if k != "model_type"})
        model = LlavaNextForConditionalGeneration(cfg)
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim >= 2:
                    p.normal_(0.0, 0.5 / p.shape[-1] ** 0.5)
        # The published folders hold transformers 4.x names (language_model.model.*, vision_tower.vision_model.*).
        from llava.convert import _hf_canonical, write_sharded

        model.save_pretrained(d)
        state = {_hf_canonical(k): v for k, v in read_state_dict(d).items()}
        for f in os.listdir(d):
            if f.startswith("model") and (f.endswith(".safetensors") or f.endswith(".json")):
                os.remove(os.path.join(d, f))
        write_sharded(state, d, max_shard_bytes=300_000)
        with open(os.path.join(d, "config.json"), "w") as f:  # the published text, not a re-serialisation
            json.dump(raw, f, indent=2)
        out[family] = d
    return out


@pytest.mark.parametrize("family", ["vicuna", "mistral"])
def test_to_original_keeps_llm_settings_and_matches_transformers(published_hf, family, tmp_path):
    from llava.convert import hf_to_original

    out = str(tmp_path / "orig")
    hf_to_original(published_hf[family], out)
    raw = json.load(open(os.path.join(out, "config.json")))
    assert raw["rope_theta"] == (1e6 if family == "mistral" else 1e4)
    if family == "mistral":
        assert "sliding_window" in raw and raw["sliding_window"] is None
    assert raw["pad_token_id"] < raw["vocab_size"]  # the pad row exists: left-padded batches work
    ours, theirs, model, _ = _logits_ours_vs_hf(out, published_hf[family])
    assert model.config.vocab_size == raw["vocab_size"]
    assert (ours - theirs).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", ["vicuna", "mistral"])
def test_hf_to_original_to_hf_is_lossless(published_hf, family, tmp_path):
    from llava.convert import hf_to_original, original_to_hf

    hf_to_original(published_hf[family], str(tmp_path / "orig"))
    original_to_hf(str(tmp_path / "orig"), str(tmp_path / "back"))
    _assert_same_checkpoint(published_hf[family], str(tmp_path / "back"),
                            ("config.json", "tokenizer.json", "tokenizer_config.json"))


def test_conversion_streams_shard_by_shard(tiny_ckpt, tmp_path):
    """At most one output shard (plus the tensor being added) is ever held."""
    from llava.convert import original_to_hf, read_state_dict

    shard = 200_000
    writer = original_to_hf(tiny_ckpt, str(tmp_path / "hf"), max_shard_bytes=shard)
    biggest = max(t.numel() * t.element_size() for t in read_state_dict(str(tmp_path / "hf")).values())
    assert len([f for f in os.listdir(tmp_path / "hf") if f.endswith(".safetensors")]) > 3
    assert writer.peak_bytes <= shard + biggest
    assert writer.peak_bytes < writer.total / 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_new_embedding_rows_are_the_mean_row(dtype):
    """Rows added for <image>/<pad> are the mean of the others (accumulated in fp32 block by
    block, 9000 rows = two full 4096-row blocks and a partial one); cutting keeps a prefix."""
    from llava.convert import _resize_rows

    w = (torch.randn(9000, 48, generator=torch.Generator().manual_seed(0)) + 0.5).to(dtype)
    out = _resize_rows(w, 9064)
    assert out.shape == (9064, 48) and out.dtype == dtype
    assert torch.equal(out[:9000], w)
    torch.testing.assert_close(out[9000:], w.double().mean(0).to(dtype).expand(64, -1))
    assert torch.equal(_resize_rows(w, 8000), w[:8000])


def test_pinpoints_keep_the_grid(tiny_ckpt, tmp_path):
    from llava.convert import original_to_hf

    original_to_hf(tiny_ckpt, str(tmp_path / "hf"))
    cfg = json.load(open(tmp_path / "hf" / "config.json"))
    assert cfg["image_grid_pinpoints"] == [[h, w] for w, h in V16_PINPOINTS]
