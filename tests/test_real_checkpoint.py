"""Real-checkpoint checks, skipped unless ``LLAVA_CHECKPOINT`` names a local folder holding an
original ``liuhaotian/llava-v1.6-*`` checkpoint (e.g. on a GPU machine):

    LLAVA_CHECKPOINT=/ckpts/llava-v1.6-vicuna-7b pytest -m slow tests/test_real_checkpoint.py

``LLAVA_EXPECT_ANSWER`` (optional) is the start of the greedy answer to the fixed image and
question below, recorded once by the user on a trusted setup (e.g. the original tree); the
test then checks that the answer still starts with it. ``LLAVA_DTYPE`` picks the dtype
(default float16 on CUDA, float32 on CPU).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from llava.compression import build_compressor
from llava.mm_utils import anyres_token_count, process_images, tokenizer_image_token

CKPT = os.environ.get("LLAVA_CHECKPOINT")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CKPT or not os.path.isdir(CKPT), reason="set LLAVA_CHECKPOINT to a local checkpoint"),
]


@pytest.fixture(scope="module")
def real():
    from llava.model.builder import load_pretrained_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_pretrained_model(CKPT, None, os.path.basename(CKPT.rstrip("/")), device=device,
                                 dtype=os.environ.get("LLAVA_DTYPE"))


def test_real_checkpoint_answers_and_compresses(real):
    from llava.conversation import build_chat_prompt, default_conv_mode

    tok, model, proc, _ = real
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (600, 1000, 3), dtype=np.uint8))
    mode = default_conv_mode(os.path.basename(CKPT.rstrip("/")))
    prompt = build_chat_prompt("What colour dominates?", model.config, mode)
    if mode == "llava_v1":  # the original tree's text for v1.6 Vicuna
        assert prompt.startswith("A chat between a curious human and an artificial intelligence assistant.")
        assert prompt.endswith("USER: <image>\nWhat colour dominates? ASSISTANT:")
    ids = tokenizer_image_token(prompt, tok, return_tensors="pt")[None].to(model.device)
    # The original tokenization: one -200, BOS once, SentencePiece's "▁" right after the image.
    pos = ids[0].tolist().index(-200)
    assert ids[0, 0].item() == tok.bos_token_id and (ids[0] == tok.bos_token_id).sum().item() == 1
    assert tok.convert_ids_to_tokens([int(ids[0, pos + 1])]) == ["▁"]
    pixels = process_images([img], proc, model.config).to(model.device, model.dtype)
    with torch.inference_mode():
        model.compressor = None
        out = model.generate(ids, images=pixels, image_sizes=[img.size], do_sample=False, max_new_tokens=16)
        assert model.last_images[0].index.shape[0] == anyres_token_count(img.size, model.config.image_grid_pinpoints)
        assert model.last_images[0].index.shape[0] == 1948  # 576 + 28 rows × (48 + 1) for 1000×600
        answer = tok.decode(out[0], skip_special_tokens=True).strip()
        assert answer
        expected = os.environ.get("LLAVA_EXPECT_ANSWER")
        if expected:
            assert answer.startswith(expected), f"greedy answer {answer!r} does not start with {expected!r}"
        model.compressor = build_compressor("globalcom2", retention_ratio=0.25)
        model.generate(ids, images=pixels, image_sizes=[img.size], do_sample=False, max_new_tokens=4)
        info = model.last_images[0].info()
        assert info["thumbnail_kept"] == 144 and len(info["budgets"]) == 4
        assert info["tokens"] < 0.3 * info["tokens_uncompressed"]
    model.compressor = None
