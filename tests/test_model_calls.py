"""The model's calling conventions: per-call compression, checks at attach/load time, cache ≡
no cache, the training/labels path, overlong prompts, dtype/device errors, answers that
depend on the inputs."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from llava.compression import AnyResLayout, FasterVLM, GlobalCom2, ScoreRequest, build_compressor
from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.errors import PromptTooLongError
from llava.mm_utils import anyres_token_count, process_images, tokenizer_image_token
from llava.testing.tiny_checkpoint import V16_PINPOINTS

PROMPT = "USER: <image>\nWhat is in the image? ASSISTANT:"

PROMPTS = ["USER: <image>\nWhat is in the image? ASSISTANT:", "USER: <image>\nHow many people are there? ASSISTANT:"]


def random_image(size, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _gen(tiny, prompt, image, **kw):
    tok, model, proc, _ = tiny
    ids = tokenizer_image_token(prompt, tok, return_tensors="pt")[None]
    px = process_images([image], proc, model.config)
    kw.setdefault("max_new_tokens", 8)
    return model.generate(ids, images=px, image_sizes=[image.size], do_sample=False,
                          pad_token_id=tok.pad_token_id, **kw)[0].tolist()


# ----------------------------------------------------------------------------- the tiny checkpoint


def test_tiny_answers_depend_on_image_and_prompt(tiny):
    """So that a batch or a resumed run that mixes rows up is caught by the tests."""
    imgs = [random_image((600, 400), s) for s in (0, 1)]
    answers = {(p, i): tuple(_gen(tiny, p, im)) for p in PROMPTS for i, im in enumerate(imgs)}
    for p in PROMPTS:
        assert answers[(p, 0)] != answers[(p, 1)], "the answer must depend on the image"
    assert len(set(answers.values())) == 4, "the answer must depend on the prompt"


# ----------------------------------------------------------------------------- per-call compression


def test_per_call_compressor_equals_the_attribute_and_leaves_it_alone(model, tiny):
    comp = build_compressor("globalcom2", retention_ratio=0.25)
    img = random_image((1000, 600), 2)
    records: list = []
    per_call = _gen(tiny, PROMPT, img, compressor=comp, image_records=records)
    assert model.compressor is None
    assert len(records) == 1 and records[0].info()["thumbnail_kept"] == 144
    model.compressor = comp
    assert _gen(tiny, PROMPT, img) == per_call
    # compressor=None switches compression off for this call only.
    off: list = []
    plain = _gen(tiny, PROMPT, img, compressor=None, image_records=off)
    assert off[0].index.shape[0] == anyres_token_count(img.size, V16_PINPOINTS)
    model.compressor = None
    assert _gen(tiny, PROMPT, img) == plain


def test_compression_context_is_per_thread(model, tiny):
    tok, _, proc, _ = tiny
    img = random_image((672, 672), 3)
    ids = tokenizer_image_token(PROMPT, tok, return_tensors="pt")[None]
    px = process_images([img], proc, model.config)
    got: dict = {}
    barrier = threading.Barrier(2)

    def run(name, ratio):
        with model.compression(build_compressor("fastervlm", retention_ratio=ratio)) as records:
            barrier.wait()
            with torch.no_grad():
                model(input_ids=ids, images=px, image_sizes=[img.size])
            barrier.wait()
            got[name] = [r.info()["thumbnail_kept"] for r in records]

    threads = [threading.Thread(target=run, args=(n, r)) for n, r in (("a", 0.5), ("b", 0.25))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {"a": [288], "b": [144]}
    assert model.compressor is None


# ----------------------------------------------------------------------------- checks before any work


def test_ratio_that_keeps_no_token_is_refused_at_attach(model, tiny_ckpt):
    from llava.model.builder import load_pretrained_model

    bad = build_compressor("globalcom2", retention_ratio=0.001)  # floor(576 · 0.001) = 0
    with pytest.raises(ValueError, match=r"retention_ratio 0.001 .*minimum is 1/576"):
        model.compressor = bad
    with pytest.raises(ValueError, match="minimum"):
        with model.compression(bad):
            pass
    with pytest.raises(ValueError, match="minimum"):
        load_pretrained_model(tiny_ckpt, None, "t", device="cpu", compressor=bad)
    model.compressor = build_compressor("globalcom2", retention_ratio=1 / 576)  # the minimum is fine


def test_score_layer_out_of_range_is_refused_at_attach(model):
    with pytest.raises(ValueError, match="vision layer 99 out of range for a 3-layer tower"):
        model.compressor = build_compressor("fastervlm", score_layer=99)
    assert model.compressor is None


def test_default_score_kind_and_layer_per_method():
    """FasterVLM: post-softmax [CLS] attention of the penultimate layer; GlobalCom²: the
    release's pre-softmax logits of the last layer."""
    assert FasterVLM().score_request() == ScoreRequest("cls_softmax", -2)
    assert GlobalCom2().score_request() == ScoreRequest("cls_logits", -1)


# ----------------------------------------------------------------------------- hand-computed crop selection


@pytest.mark.parametrize("alpha,keep0,keep1", [(0.3, [0, 1], [1, 3]), (0.7, [2, 3], [2, 3])])
def test_alpha_mixes_global_and_local_scores_by_hand(alpha, keep0, keep1):
    """Two 2×2 crops side by side, no letterbox, R = 0.5 (2 tokens per crop), uniform budgets.
    Thumbnail map [[1, 2], [3, 4]] resized (bilinear, align_corners=False) to 2×4 gives
    [[1, 1.25, 1.75, 2], [3, 3.25, 3.75, 4]], so the global scores are g₀ = [1, 1.25, 3, 3.25]
    and g₁ = [1.75, 2, 3.75, 4]. Local scores l₀ = [4, 3, 2, 1], l₁ = [1, 4, 2, 3].
    s = α·g/‖g‖ + (1−α)·l/‖l‖ (‖g₀‖ = √22.125, ‖g₁‖ = √37.125, ‖l‖ = √30):
    α = 0.3: s₀ ≈ [.575, .463, .447, .335] → {0, 1}; s₁ ≈ [.214, .610, .440, .580] → {1, 3};
    α = 0.7: s₀ ≈ [.368, .350, .556, .538] → {2, 3}; s₁ ≈ [.256, .449, .540, .624] → {2, 3}."""
    lay = AnyResLayout(grid_w=2, grid_h=1, side=2, top=0, bottom=2, left=0, right=4)
    scores = torch.tensor([[1.0, 2, 3, 4], [4, 3, 2, 1], [1, 4, 2, 3]])
    sel = GlobalCom2(retention_ratio=0.5, alpha=alpha, allocation="uniform").select(lay, scores, torch.zeros(3, 4, 1))
    assert sel.thumb_keep.nonzero().flatten().tolist() == [2, 3]
    assert sel.crop_keep[0].nonzero().flatten().tolist() == keep0
    assert sel.crop_keep[1].nonzero().flatten().tolist() == keep1


# ----------------------------------------------------------------------------- decoding paths


@pytest.mark.parametrize("method", ["none", "globalcom2"])
def test_kv_cache_equals_cache_free_decoding(model, tiny, method):
    comp = build_compressor(method, retention_ratio=0.25) if method != "none" else None
    img = random_image((1000, 600), 5)
    with_cache = _gen(tiny, PROMPT, img, compressor=comp, use_cache=True, max_new_tokens=6)
    without = _gen(tiny, PROMPT, img, compressor=comp, use_cache=False, max_new_tokens=6)
    assert with_cache == without


def test_labels_path_ignores_image_positions(model, tiny):
    """Training forward: the spliced labels are IGNORE_INDEX on every visual token and the
    text labels shifted with the text; the loss is the mean CE over the text positions."""
    tok, _, proc, _ = tiny
    img = random_image((672, 336), 6)
    ids = tokenizer_image_token(PROMPT + " A cat.", tok, return_tensors="pt")[None]
    labels = ids.clone()
    labels[labels == IMAGE_TOKEN_INDEX] = IGNORE_INDEX
    px = process_images([img], proc, model.config)
    with torch.no_grad():
        _, _, _, _, embeds, new_labels = model.prepare_inputs_labels_for_multimodal(
            ids, None, None, None, labels, px, [img.size]
        )
        out = model(input_ids=ids, labels=labels, images=px, image_sizes=[img.size])
    n_img = anyres_token_count(img.size, V16_PINPOINTS)
    pos = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero())
    assert new_labels.shape[1] == ids.shape[1] - 1 + n_img
    assert (new_labels[0, pos : pos + n_img] == IGNORE_INDEX).all()
    text = torch.cat([labels[0, :pos], labels[0, pos + 1 :]])
    assert torch.equal(torch.cat([new_labels[0, :pos], new_labels[0, pos + n_img :]]), text)
    logits = out.logits[0, :-1].float()
    target = new_labels[0, 1:]
    ref = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(out.loss.float(), ref, atol=1e-5, rtol=1e-5)


def test_overlong_prompt_raises_in_generate_and_is_cut_in_forward(model, tiny):
    tok, _, proc, _ = tiny
    img = random_image((672, 672), 7)
    ids = tokenizer_image_token(PROMPT, tok, return_tensors="pt")[None]
    px = process_images([img], proc, model.config)
    limit = model.config.tokenizer_model_max_length
    model.config.tokenizer_model_max_length = 100
    try:
        with pytest.raises(PromptTooLongError) as err:
            model.generate(ids, images=px, image_sizes=[img.size], max_new_tokens=2)
        assert (err.value.index, err.value.limit) == (0, 100)
        assert err.value.length == ids.shape[1] - 1 + anyres_token_count(img.size, V16_PINPOINTS)
        with torch.no_grad():  # forward keeps the original truncation (training path)
            assert model(input_ids=ids, images=px, image_sizes=[img.size]).logits.shape[1] == 100
    finally:
        model.config.tokenizer_model_max_length = limit


# ----------------------------------------------------------------------------- loading errors


def test_dtype_names_and_bad_dtypes(tiny_ckpt, tmp_path):
    from llava.model.builder import load_pretrained_model, parse_dtype

    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("float16") is torch.float16
    assert parse_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'f8'"):
        load_pretrained_model(tiny_ckpt, None, "t", device="cpu", dtype="f8")
    tok, model, _, _ = load_pretrained_model(tiny_ckpt, None, "t", device="cpu", dtype="bf16")
    assert model.dtype == torch.bfloat16
    ck = tmp_path / "ck"
    shutil.copytree(tiny_ckpt, ck)
    cfg = json.loads((ck / "config.json").read_text())
    (ck / "config.json").write_text(json.dumps({**cfg, "torch_dtype": "float17"}))
    with pytest.raises(ValueError, match=r"config\.json: torch_dtype 'float17' is not a dtype"):
        load_pretrained_model(str(ck), None, "t", device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_is_an_error(tiny_ckpt):
    from llava.model.builder import load_pretrained_model

    with pytest.raises(ValueError, match="CUDA is not available"):
        load_pretrained_model(tiny_ckpt, None, "t", device="cuda")


# ----------------------------------------------------------------------------- placement (device_map)

# On a CPU, "disk" is the placement that makes accelerate's hooks move weights: offloaded
# parameters stay on "meta" and are loaded module by module while that module's forward runs.
OFFLOAD_MAPS = {
    "layer-tower-projector-head-on-disk": {
        "model.embed_tokens": "cpu", "model.layers.0": "disk", "model.layers.1": "cpu", "model.norm": "cpu",
        "model.rotary_emb": "cpu", "model.vision_tower": "disk", "model.mm_projector": "disk",
        "model.image_newline": "cpu", "lm_head": "disk",
    },
    "base-model-on-disk": {"model": "disk", "lm_head": "cpu"},  # image_newline offloaded with its module
}
# accelerate warns on a device_map key naming a parameter (model.image_newline), although
# transformers places that parameter by it (as device_map="auto" can produce such keys).
_BARE_PARAM_KEY = "ignore:The following device_map keys do not match any submodules:UserWarning"


@pytest.mark.filterwarnings(_BARE_PARAM_KEY)
@pytest.mark.parametrize("name", list(OFFLOAD_MAPS))
def test_offloading_device_map_generates_the_plain_tokens(tiny, tiny_ckpt, tmp_path, name):
    """What reads weights outside their module's forward must see them loaded: the [CLS]
    scorer (a tower layer's q/k weights), the tower's input placement, ``image_newline``."""
    from llava.model.builder import load_pretrained_model

    device_map = OFFLOAD_MAPS[name]
    loaded = load_pretrained_model(tiny_ckpt, None, "tiny-llava", device="cpu", device_map=device_map,
                                   offload_folder=str(tmp_path / "offload"))
    model = loaded[1]
    assert model.hf_device_map == device_map
    tower_layer = model.get_vision_tower().vision_tower.encoder.layers[-1]
    for weight in (model.get_model().layers[0].self_attn.q_proj.weight, tower_layer.self_attn.k_proj.weight):
        assert weight.device.type == "meta"  # really offloaded
    img = random_image((1000, 600), 2)
    # GlobalCom² scores at the tower's last layer (past the feature layer), FasterVLM inside it,
    # HiRED at two layers, PruMerge reads keys too; with the base model offloaded, GlobalCom²
    # covers image_newline (the tower as above).
    for method in ("globalcom2", "fastervlm", "hired", "prumerge") if "tower" in name else ("globalcom2",):
        comp = build_compressor(method, retention_ratio=0.25)
        ref_records, records = [], []
        expected = _gen(tiny, PROMPT, img, compressor=comp, image_records=ref_records, max_new_tokens=4)
        assert _gen(loaded, PROMPT, img, compressor=comp, image_records=records, max_new_tokens=4) == expected
        assert torch.equal(records[0].index, ref_records[0].index)
    # The drivers' path places its inputs itself (model.device would be "meta" here).
    if "base" in name:
        from llava.eval.generation import generate_answers

        ask = dict(messages=["What is it?"], images=[[img]], conv_mode="vicuna_v1", max_new_tokens=4)
        want = generate_answers(tiny[1], tiny[0], tiny[2], **ask)
        assert [a.text for a in generate_answers(model, loaded[0], loaded[2], **ask)] == [a.text for a in want]


@pytest.mark.filterwarnings(_BARE_PARAM_KEY)
def test_image_newline_alone_on_disk_is_refused(tiny_ckpt, tmp_path):
    from llava.model.builder import load_pretrained_model

    device_map = {**OFFLOAD_MAPS["layer-tower-projector-head-on-disk"], "model.image_newline": "disk"}
    with pytest.raises(ValueError, match="image_newline"):
        load_pretrained_model(tiny_ckpt, None, "tiny-llava", device="cpu", device_map=device_map,
                              offload_folder=str(tmp_path / "offload"))


def test_llava_hf_folder_is_refused_with_the_command(tmp_path):
    from llava.model.builder import load_pretrained_model

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava_next"}))
    with pytest.raises(ValueError, match="python -m llava.convert to-original"):
        load_pretrained_model(str(tmp_path), None, "x", device="cpu")


def test_quantisation_keeps_tower_and_projector_unquantised():
    pytest.importorskip("bitsandbytes", reason="bitsandbytes not installed")
    from llava.model.builder import quantization_config

    for kw in (dict(load_8bit=True, load_4bit=False), dict(load_8bit=False, load_4bit=True)):
        cfg = quantization_config(**kw)
        assert {"vision_tower", "mm_projector"} <= set(cfg.llm_int8_skip_modules)


def test_scores_are_float32_from_a_half_precision_tower(tiny):
    from llava.compression.scoring import cls_attention_scores

    layer = tiny[1].get_vision_tower().vision_tower.encoder.layers[1]
    hidden = torch.randn(2, 577, layer.self_attn.embed_dim)
    ref = cls_attention_scores(layer, hidden)
    half = cls_attention_scores(_copy_to(layer, torch.bfloat16), hidden.bfloat16())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, ref, atol=0.05, rtol=0.05)


def _copy_to(module, dtype):
    import copy

    return copy.deepcopy(module).to(dtype)


def test_a_decompression_bomb_is_an_image_load_error(tmp_path):
    """load_image (run_llava, the lmms-eval tasks, the drivers) refuses it naming the file."""
    from eval_utils import bomb_png

    from llava.mm_utils import ImageLoadError, load_image

    bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageLoadError, match=r"image .*bomb\.png refused: .*decompression bomb"):
        load_image(str(tmp_path / "bomb.png"))
