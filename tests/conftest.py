"""Shared fixtures: one tiny original-format checkpoint (and its transformers conversion) per
test session, so the whole suite pays the torch/transformers start-up and the model build once."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
