"""Shared fixtures: one tiny original-format checkpoint (and its transformers conversion) per
test session, so the whole suite pays the torch/transformers start-up and the model build once."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> str:
    """Path of a tiny random LLaVA-NeXT (Llama) checkpoint in the original format."""
    from llava.testing.tiny_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("tiny-llava")), "llama", seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_ckpt):
    """``(tokenizer, model, image_processor, context_len)`` loaded from :func:`tiny_ckpt`.
    Tests that change ``model.compressor`` must restore it (use the ``model`` fixture)."""
    from llava.model.builder import load_pretrained_model

    return load_pretrained_model(tiny_ckpt, None, "tiny-llava", device="cpu")


@pytest.fixture
def model(tiny):
    """The session's tiny model with compression reset to off before and after the test."""
    m = tiny[1]
    m.compressor = None
    yield m
    m.compressor = None


@pytest.fixture(scope="session")
def vqa(tmp_path_factory):
    """Five short-answer questions (``questions.jsonl``) with images of different shapes."""
    from eval_utils import make_vqa

    return make_vqa(tmp_path_factory.mktemp("vqa"))


@pytest.fixture(scope="session")
def reference(tiny_ckpt, vqa) -> list[dict]:
    """The uninterrupted single-process, batch-size-1 run of :func:`vqa` (in ``vqa/ref``)."""
    from eval_utils import answers, loader_args

    from llava.eval import model_vqa_loader

    out = vqa / "ref" / "answers.jsonl"
    model_vqa_loader.main(loader_args(tiny_ckpt, vqa, out))
    return answers(out)


# ----------------------------------------------------------------------------- transformers' own VLMs


@pytest.fixture(scope="session")
def hf_llava_next():
    """``(model, processor)``: a tiny random ``LlavaNextForConditionalGeneration`` (CLIP 336/14)."""
    from llava.testing.tiny_hf import tiny_llava_next

    return tiny_llava_next()


@pytest.fixture(scope="session")
def hf_onevision():
    """``(model, processor)``: a tiny random ``LlavaOnevisionForConditionalGeneration`` with
    112-px SigLIP views (8×8 tokens), pinpoints up to 6×6 crops, ``anyres_max_9``."""
    from llava.testing.tiny_hf import tiny_onevision

    return tiny_onevision()


@pytest.fixture(scope="session")
def hf_qwen2_vl():
    from llava.testing.tiny_hf import tiny_qwen2_vl

    return tiny_qwen2_vl()


@pytest.fixture(scope="session")
def hf_qwen2_5_vl():
    from llava.testing.tiny_hf import tiny_qwen2_5_vl

    return tiny_qwen2_5_vl()


@pytest.fixture(scope="session")
def converted_llava_next(tiny_ckpt, tmp_path_factory):
    """:func:`tiny_ckpt` converted by ``llava.convert to-hf`` and loaded as transformers'
    ``LlavaNextForConditionalGeneration`` (fp32)."""
    import torch
    from transformers import LlavaNextForConditionalGeneration

    from llava.convert import original_to_hf

    out = str(tmp_path_factory.mktemp("tiny-hf-converted"))
    original_to_hf(tiny_ckpt, out)
    return LlavaNextForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_deep(tiny, tiny_ckpt):
    """``(tokenizer, model, image_processor)``: the tiny checkpoint's geometry, tokenizer and
    vision tower settings with a 4-layer LLM (random weights), for multi-stage in-LLM pruning."""
    import json

    from llava.testing.tiny_checkpoint import random_model

    with open(os.path.join(tiny_ckpt, "config.json")) as f:
        raw = json.load(f)
    with open(os.path.join(tiny_ckpt, "clip_vision_tower", "config.json")) as f:
        vision = json.load(f)
    raw["num_hidden_layers"] = 4
    model = random_model(raw, vision, seed=1).eval()
    return tiny[0], model, tiny[2]


@pytest.fixture(scope="session")
def video_media(tmp_path_factory) -> str:
    """The folder of the tiny video task's files (``lmms_data.write_video_media``)."""
    from lmms_data import write_video_media

    return write_video_media(str(tmp_path_factory.mktemp("video-media")))


@pytest.fixture(scope="session")
def video_checkpoints(hf_onevision, hf_qwen2_vl, hf_qwen2_5_vl, tmp_path_factory) -> dict[str, str]:
    """lmms-eval video model name → a checkpoint folder of the session's tiny model of that
    family, saved as published ones are (processor and video processor settings, a chat template)."""
    from llava.testing.tiny_hf import LLAVA_CHAT_TEMPLATE, QWEN_CHAT_TEMPLATE, save_checkpoint

    models = {"llava_onevision_gc2": (hf_onevision, LLAVA_CHAT_TEMPLATE), "qwen2_vl_gc2": (hf_qwen2_vl, QWEN_CHAT_TEMPLATE),
              "qwen2_5_vl_gc2": (hf_qwen2_5_vl, QWEN_CHAT_TEMPLATE)}
    return {name: save_checkpoint(*built, str(tmp_path_factory.mktemp(name)), chat_template=template)
            for name, (built, template) in models.items()}
