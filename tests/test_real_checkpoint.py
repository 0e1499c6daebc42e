"""Real-checkpoint checks, skipped unless ``LLAVA_CHECKPOINT`` names a local folder holding an
original ``liuhaotian/llava-v1.6-*`` checkpoint (e.g. on a GPU machine):

    LLAVA_CHECKPOINT=/ckpts/llava-v1.6-vicuna-7b pytest -m slow tests/test_real_checkpoint.py
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

    return load_pretrained_model(CKPT, None, os.path.basename(CKPT.rstrip("/")))


def test_real_checkpoint_answers_and_compresses(real):
    tok, model, proc, _ = real
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (600, 1000, 3), dtype=np.uint8))
    prompt = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
              "detailed, and polite answers to the user's questions. USER: <image>\nWhat colour dominates? ASSISTANT:")
    ids = tokenizer_image_token(prompt, tok, return_tensors="pt")[None].to(model.device)
    pixels = process_images([img], proc, model.config).to(model.device, model.dtype)
    with torch.inference_mode():
        model.compressor = None
        out = model.generate(ids, images=pixels, image_sizes=[img.size], do_sample=False, max_new_tokens=8)
        assert model.last_images[0].index.shape[0] == anyres_token_count(img.size, model.config.image_grid_pinpoints)
        assert tok.decode(out[0], skip_special_tokens=True).strip()
        model.compressor = build_compressor("globalcom2", retention_ratio=0.25)
        model.generate(ids, images=pixels, image_sizes=[img.size], do_sample=False, max_new_tokens=4)
        info = model.last_images[0].info()
        assert info["thumbnail_kept"] == 144 and len(info["budgets"]) == 4
        assert info["tokens"] < 0.3 * info["tokens_uncompressed"]
    model.compressor = None
