"""The LLaVA-NeXT tree: exactness against transformers' own LLaVA-NeXT, batching, inputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import get_conv_template
from llava.mm_utils import (
    ImageLoadError,
    anyres_token_count,
    get_anyres_image_grid_shape,
    load_image,
    process_images,
    select_best_resolution,
    tokenizer_image_token,
)
from llava.testing.tiny_checkpoint import V16_PINPOINTS

PROMPT = "USER: <image>\nWhat is in the image? ASSISTANT:"

# (size, expected grid (w, h)) covering every grid and row / column / no padding.
GRID_CASES = [
    ((1000, 600), (2, 2)),  # row padding
    ((600, 1000), (2, 2)),  # column padding
    ((672, 672), (2, 2)),  # none
    ((336, 336), (1, 2)),  # row padding
    ((700, 350), (2, 1)),  # none
    ((1000, 300), (3, 1)),  # row padding
    ((800, 380), (3, 1)),  # column padding
    ((400, 1500), (1, 3)),  # column padding
    # Extreme aspect ratios: no image column (1×5000: 576 + 48 newline-only rows = 624 tokens) or
    # no image row (5000×60: the thumbnail alone), as vanilla LLaVA-NeXT.
    ((1, 5000), (1, 2)),
    ((5000, 1), (1, 2)),
    ((5000, 60), (3, 1)),
    ((60, 5000), (1, 3)),
]


def random_image(size, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def prepare(tiny, size, seed=0, prompt=PROMPT):
    tok, model, proc, _ = tiny
    img = random_image(size, seed)
    pixels = process_images([img], proc, model.config)
    ids = tokenizer_image_token(prompt, tok, return_tensors="pt")[None]
    return ids, pixels, [img.size]


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "size,count", [((640, 480), 2340), ((480, 640), 2352), ((672, 672), 2928), ((336, 336), 1176), ((1000, 300), 2182)]
)
def test_token_counts_match_reference(size, count):
    assert anyres_token_count(size, V16_PINPOINTS) == count


def test_best_resolution_prefers_effective_pixels_then_less_waste():
    # 1000×600: (672, 672) keeps 672×403 pixels, more than any other pinpoint.
    assert select_best_resolution((1000, 600), V16_PINPOINTS) == (672, 672)
    # 336×336 ties between (336, 672) and (672, 336): same pixels, same waste → first wins.
    assert select_best_resolution((336, 336), V16_PINPOINTS) == (336, 672)
    assert get_anyres_image_grid_shape((1500, 400), V16_PINPOINTS, 336) == (3, 1)


# ----------------------------------------------------------------------------- exactness


@pytest.fixture(scope="session")
def tiny_hf(tiny_ckpt, tmp_path_factory):
    from transformers import LlavaNextForConditionalGeneration

    from llava.convert import original_to_hf

    out = str(tmp_path_factory.mktemp("tiny-hf"))
    original_to_hf(tiny_ckpt, out)
    return LlavaNextForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()


@pytest.mark.parametrize("size,grid", GRID_CASES)
def test_logits_equal_transformers_llava_next(tiny, tiny_hf, size, grid):
    model = tiny[1]
    ids, pixels, sizes = prepare(tiny, size)
    with torch.no_grad():
        ours = model(input_ids=ids, images=pixels, image_sizes=sizes).logits
        record = model.last_images[0]
        assert (record.layout.grid_w, record.layout.grid_h) == grid
        n_visual = record.index.shape[0]
        assert n_visual == anyres_token_count(size, V16_PINPOINTS)
        pos = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero())
        hf_ids = torch.cat([ids[0, :pos], torch.full((n_visual,), tiny_hf.config.image_token_index), ids[0, pos + 1 :]])
        theirs = tiny_hf(
            input_ids=hf_ids[None], pixel_values=pixels, image_sizes=torch.tensor([[size[1], size[0]]])
        ).logits
    assert ours.shape[1] == theirs.shape[1]
    assert (ours - theirs[..., : ours.shape[-1]]).abs().max().item() <= 1e-4


def test_mistral_checkpoint_matches_transformers(tmp_path):
    from transformers import LlavaNextForConditionalGeneration

    from llava.convert import original_to_hf
    from llava.model.builder import load_pretrained_model
    from llava.testing.tiny_checkpoint import write_tiny_checkpoint

    src = write_tiny_checkpoint(str(tmp_path / "m"), "mistral", seed=1)
    original_to_hf(src, str(tmp_path / "hf"))
    tiny = load_pretrained_model(src, None, "tiny-mistral", device="cpu")
    assert type(tiny[1]).__name__ == "LlavaMistralForCausalLM"
    hf = LlavaNextForConditionalGeneration.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32).eval()
    ids, pixels, sizes = prepare(tiny, (1000, 600))
    with torch.no_grad():
        ours = tiny[1](input_ids=ids, images=pixels, image_sizes=sizes).logits
        n = tiny[1].last_images[0].index.shape[0]
        pos = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero())
        hf_ids = torch.cat([ids[0, :pos], torch.full((n,), hf.config.image_token_index), ids[0, pos + 1 :]])
        theirs = hf(input_ids=hf_ids[None], pixel_values=pixels, image_sizes=torch.tensor([[600, 1000]])).logits
    assert (ours - theirs[..., : ours.shape[-1]]).abs().max().item() <= 1e-4


def test_conversion_round_trip_is_lossless(tiny_ckpt, tmp_path):
    from llava.convert import hf_to_original, original_to_hf, read_state_dict

    original_to_hf(tiny_ckpt, str(tmp_path / "hf"))
    hf_to_original(str(tmp_path / "hf"), str(tmp_path / "back"))
    a, b = read_state_dict(tiny_ckpt), read_state_dict(str(tmp_path / "back"))
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(os.path.join(tiny_ckpt, "config.json")) as f:
        cfg_a = json.load(f)
    with open(tmp_path / "back" / "config.json") as f:
        cfg_b = json.load(f)
    assert cfg_b["image_grid_pinpoints"] == cfg_a["image_grid_pinpoints"]


def test_loaded_weights_equal_checkpoint_tensors(tiny, tiny_ckpt):
    from llava.convert import read_state_dict
    from llava.testing.tiny_checkpoint import to_original_names

    ours = to_original_names(tiny[1].state_dict())
    ref = read_state_dict(tiny_ckpt)
    assert set(ours) == set(ref)
    assert all(torch.equal(ours[k], ref[k]) for k in ref)


# ----------------------------------------------------------------------------- batching


def _batch(tok, prompts, side):
    rows = [tokenizer_image_token(p, tok, return_tensors="pt") for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, sl], mask[i, sl] = r, 1
    return ids, mask


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_generation_equals_single_runs(tiny, side):
    tok, model, proc, _ = tiny
    prompts = [PROMPT, "USER: <image>\nDescribe it in detail please. ASSISTANT:", "USER: <image>\nColor? ASSISTANT:"]
    imgs = [random_image(s, i) for i, s in enumerate([(1000, 600), (336, 336), (400, 1500)])]
    pixels = process_images(imgs, proc, model.config)
    assert isinstance(pixels, list)  # different view counts
    sizes = [im.size for im in imgs]
    gen = dict(do_sample=False, max_new_tokens=5, pad_token_id=tok.pad_token_id)
    singles = []
    for p, px, s in zip(prompts, pixels, sizes):
        ids = tokenizer_image_token(p, tok, return_tensors="pt")[None]
        singles.append(model.generate(ids, images=[px], image_sizes=[s], **gen)[0].tolist())
    ids, mask = _batch(tok, prompts, side)
    out = model.generate(ids, attention_mask=mask, images=pixels, image_sizes=sizes, **gen)
    assert [_until_eos(row.tolist(), tok.eos_token_id) for row in out] == [_until_eos(s, tok.eos_token_id) for s in singles]


def _until_eos(ids: list[int], eos: int) -> list[int]:
    """A batch keeps emitting padding after a row's EOS; compare up to the EOS."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def test_batch_forward_logits_equal_single(tiny):
    tok, model, proc, _ = tiny
    imgs = [random_image((672, 672), 3), random_image((1000, 300), 4)]
    pixels = process_images(imgs, proc, model.config)
    ids, mask = _batch(tok, [PROMPT, PROMPT], "right")
    with torch.no_grad():
        both = model(input_ids=ids, attention_mask=mask, images=pixels, image_sizes=[im.size for im in imgs]).logits
        for i, (px, im) in enumerate(zip(pixels, imgs)):
            one = model(input_ids=ids[i : i + 1], images=[px], image_sizes=[im.size]).logits[0]
            torch.testing.assert_close(both[i, : one.shape[0]], one, atol=1e-5, rtol=1e-5)


def test_placeholder_and_image_count_mismatch_is_an_error(tiny):
    tok, model, proc, _ = tiny
    ids, pixels, sizes = prepare(tiny, (672, 672), prompt="USER: <image> and <image>? ASSISTANT:")
    with pytest.raises(ValueError, match="2 image placeholder"):
        model(input_ids=ids, images=pixels, image_sizes=sizes)


def test_wrong_image_size_for_views_is_an_error(tiny):
    ids, pixels, _ = prepare(tiny, (672, 672))
    with pytest.raises(ValueError, match="tiles into"):
        tiny[1](input_ids=ids, images=pixels, image_sizes=[(1000, 300)])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_keeps_dtype(tiny_ckpt, dtype):
    from llava.model.builder import load_pretrained_model

    tok, model, proc, _ = load_pretrained_model(tiny_ckpt, None, "tiny", device="cpu", dtype=dtype)
    assert model.dtype == dtype
    img = random_image((1000, 600))
    pixels = process_images([img], proc, model.config).to(dtype)
    ids = tokenizer_image_token(PROMPT, tok, return_tensors="pt")[None]
    with torch.no_grad():
        tokens = model.images_to_tokens(pixels, [img.size])
        out = model(input_ids=ids, images=pixels, image_sizes=[img.size])
    assert tokens[0].dtype == dtype and out.logits.dtype == dtype
    assert torch.isfinite(out.logits.float()).all()


# ----------------------------------------------------------------------------- images and text


def _save(img: Image.Image, path) -> str:
    img.save(path)
    return str(path)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "I", "1"])
def test_any_image_mode_loads_as_rgb(tmp_path, mode):
    base = random_image((40, 30))
    if mode == "I;16":
        arr = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        img = Image.fromarray(arr)
        assert img.mode.startswith("I;16")
    elif mode == "I":
        img = base.convert("L").convert("I").point(lambda v: v * 100)
    else:
        img = base.convert(mode)
    ext = "tiff" if mode in ("CMYK", "I;16", "I") else "png"
    out = load_image(_save(img, tmp_path / f"x.{ext}"))
    assert out.mode == "RGB" and out.size == (40, 30)
    # High bit depths are rescaled, not clipped to white: 16-bit by its full range, 32-bit by its max.
    grey = np.asarray(base.convert("L"), dtype=np.float64)
    got = np.asarray(out, dtype=np.float64)[..., 0]
    if mode == "I;16":
        assert np.abs(got - grey).max() <= 1
    elif mode == "I":
        assert np.abs(got - 255 * grey / grey.max()).max() <= 1


def test_unreadable_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        load_image(str(bad))
    with pytest.raises(ImageLoadError, match="nowhere.png"):
        load_image(str(tmp_path / "nowhere.png"))


@pytest.mark.parametrize("size", [(1, 1), (50, 2500), (2500, 50), (1, 5000), (5000, 60), (7300, 100)])
def test_tiny_and_extreme_aspect_images_run(tiny, size):
    from llava.compression import build_compressor

    ids, pixels, sizes = prepare(tiny, size)
    with torch.no_grad():
        out = tiny[1](input_ids=ids, images=pixels, image_sizes=sizes)
        n = tiny[1].last_images[0].index.shape[0]
        assert n == anyres_token_count(size, V16_PINPOINTS)
        assert torch.isfinite(out.logits).all()
        for method in ("globalcom2", "fastervlm"):  # GlobalCom² used to crash above ~72:1
            records: list = []
            tiny[1](input_ids=ids, images=pixels, image_sizes=sizes,
                    compressor=build_compressor(method, retention_ratio=0.25), image_records=records)
            assert records[0].info()["thumbnail_kept"] == 144


def test_unknown_template_lists_the_valid_ones():
    with pytest.raises(KeyError, match="valid"):
        get_conv_template("nope")


def test_tokenizer_image_token_splices_one_id_and_one_bos(tiny):
    tok = tiny[0]
    ids = tokenizer_image_token("USER: <image>\nHi ASSISTANT:", tok)
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    before = tok("USER: ").input_ids
    assert ids[: len(before)] == before


# ----------------------------------------------------------------------------- offline loading


def test_missing_vision_tower_folder_is_a_clear_error(tiny_ckpt, tmp_path):
    import shutil

    from llava.model.builder import load_pretrained_model
    from llava.model.multimodal_encoder.builder import VisionTowerNotFound

    ck = tmp_path / "ck"
    shutil.copytree(tiny_ckpt, ck)
    shutil.rmtree(ck / "clip_vision_tower")
    with pytest.raises(VisionTowerNotFound, match="clip_vision_tower"):
        load_pretrained_model(str(ck), None, "tiny", device="cpu")
    # An explicit local tower folder makes it load.
    tok, model, proc, _ = load_pretrained_model(
        str(ck), None, "tiny", device="cpu", vision_tower_path=os.path.join(tiny_ckpt, "clip_vision_tower")
    )
    assert model.get_vision_tower().num_patches == 576


def test_known_tower_name_resolves_without_network():
    from types import SimpleNamespace

    from llava.model.multimodal_encoder.builder import resolve_vision_config

    cfg, proc, source = resolve_vision_config(SimpleNamespace(mm_vision_tower="openai/clip-vit-large-patch14-336"))
    assert source.startswith("built-in") and cfg.hidden_size == 1024 and cfg.num_hidden_layers == 24
    assert cfg.image_size == 336 and cfg.patch_size == 14 and proc["crop_size"]["height"] == 336


def test_missing_model_folder_is_a_clear_error(tmp_path):
    from llava.model.builder import load_pretrained_model

    with pytest.raises(FileNotFoundError, match="model folder not found"):
        load_pretrained_model(str(tmp_path / "absent"), None, "x", device="cpu")


def test_attention_implementations_agree(tiny_ckpt):
    from llava.model.builder import load_pretrained_model

    outs = []
    for attn in ("sdpa", "eager"):
        tok, model, proc, _ = load_pretrained_model(tiny_ckpt, None, "t", device="cpu", attn_implementation=attn)
        assert model.get_vision_tower().vision_tower.config._attn_implementation == attn
        img = random_image((672, 336))
        with torch.no_grad():
            outs.append(model(input_ids=tokenizer_image_token(PROMPT, tok, return_tensors="pt")[None],
                              images=process_images([img], proc, model.config), image_sizes=[img.size]).logits)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=1e-4)


def test_sentencepiece_tokenizer_of_the_original_checkpoints_loads(tmp_path):
    """liuhaotian/llava-v1.6-* ship a SentencePiece tokenizer.model with a LlamaTokenizer config."""
    import io
    import json

    import sentencepiece as spm

    from llava.model.builder import load_tokenizer
    from llava.testing.tiny_checkpoint import _CORPUS

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 20), model_writer=buf, vocab_size=600, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True, character_coverage=1.0, minloglevel=2,
    )
    (tmp_path / "tokenizer.model").write_bytes(buf.getvalue())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<unk>", "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "model_max_length": 4096, "padding_side": "right",
    }))
    tok = load_tokenizer(str(tmp_path))
    ids = tokenizer_image_token("USER: <image>\nWhat? ASSISTANT:", tok)
    assert ids[0] == 1 and ids.count(1) == 1 and ids.count(IMAGE_TOKEN_INDEX) == 1
    assert tok.pad_token_id == 0 and tok.eos_token_id == 2
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_tokenizer(str(tmp_path / "no-such-folder"))
