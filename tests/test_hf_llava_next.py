"""llava.hf on transformers' LLaVA-NeXT: on a checkpoint converted from our tiny original one
(``llava.convert to-hf``), the plug-in gives our tree's visual tokens and logits for every
method, option and layout, padded grids included."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import random_image

import llava.hf
from llava.compression import build_compressor
from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import process_images, tokenizer_image_token

PROMPTS = ["USER: <image>\nWhat is in the image? ASSISTANT:", "USER: <image>\nColor? ASSISTANT:"]
# row padding, column padding, none, 1×2 with row padding, 3×1 with row padding, 1×3 with column padding
SIZES = [(1000, 600), (600, 1000), (672, 672), (336, 336), (1000, 300), (400, 1500)]

CONFIGS = [
    dict(name="globalcom2"),
    dict(name="globalcom2", layout="reference"),
    dict(name="globalcom2", allocation="softmax_max", alpha=0.0),
    dict(name="globalcom2", allocation="ntopk", alpha=1.0, retention_ratio=0.1),
    dict(name="globalcom2", allocation="uniform", score="cls_softmax", score_layer=-2),
    dict(name="globalcom2", score="neg_cos", retention_ratio=0.5),
    dict(name="globalcom2", score="attn_received"),
    dict(name="globalcom2", budget="exact", temperature=3.0),
    dict(name="globalcom2", budget="exact", layout="reference"),
    dict(name="fastervlm"),
    dict(name="fastervlm", score="attn_received", retention_ratio=0.3, layout="reference"),
    dict(name="uniform_random", seed=3),
    dict(name="visionzip", retention_ratio=0.1),
    dict(name="hired", alpha=0.3, regions="spatial", newlines="none"),
    dict(name="prumerge", merge="mean", newlines="all"),
    dict(name="prumerge_plus", budget="adaptive"),
]


def _comp(config):
    kw = dict(config)
    return build_compressor(kw.pop("name"), **kw)


def _config_id(config) -> str:
    return "-".join(str(v) for v in config.values())


def _hf_sizes(imgs) -> torch.Tensor:
    return torch.tensor([[im.size[1], im.size[0]] for im in imgs])  # transformers: (height, width)


def _hf_prompt(hf, ids: torch.Tensor, n_full: int) -> torch.Tensor:
    """Our prompt with its one IMAGE_TOKEN_INDEX expanded to transformers' placeholder run."""
    pos = int((ids == IMAGE_TOKEN_INDEX).nonzero())
    return torch.cat([ids[:pos], torch.full((n_full,), hf.config.image_token_index), ids[pos + 1 :]])


def test_visual_tokens_equal_our_tree(tiny, model, converted_llava_next):
    """Every config × six grids: same packed sequence (index) and tokens. The vision towers
    run once per score request; each config then compresses on both sides."""
    _, _, proc, _ = tiny
    imgs = [random_image(w, h, seed=i) for i, (w, h) in enumerate(SIZES)]
    pixels = process_images(imgs, proc, model.config)
    adapter = llava.hf.adapter_for(converted_llava_next)
    inputs = {"pixel_values": pixels, "image_sizes": _hf_sizes(imgs)}
    layouts = [model.image_layout(im.size, px.shape[0]) for im, px in zip(imgs, pixels)]
    hf_layouts = adapter.image_layouts(inputs)
    assert hf_layouts == layouts  # the host's geometry is our tree's for these sizes
    views = [px.shape[0] for px in pixels]
    cache = {}
    for config in CONFIGS:
        comp = _comp(config)
        request = comp.score_request()
        if request not in cache:
            with torch.no_grad():
                ours = model.encode_views(torch.cat(list(pixels)), request)
                theirs = adapter.vision(adapter.view_pixels(pixels, hf_layouts), request, inputs)
            cache[request] = [[t.split(views) if t is not None else [None] * len(views) for t in pair] for pair in (ours, theirs)]
        (f_ours, s_ours), (f_hf, s_hf) = cache[request]
        model.compressor = comp
        with torch.no_grad():
            for i, lay in enumerate(layouts):
                mine = model.pack_image(f_ours[i], lay, s_ours[i])
                theirs = comp.compress(f_hf[i], converted_llava_next.model.image_newline, lay, s_hf[i],
                                       project=converted_llava_next.model.multi_modal_projector)
                assert torch.equal(theirs.index, mine.index), (config, SIZES[i])
                assert (theirs.tokens - mine.tokens).abs().max().item() <= 1e-5, (config, SIZES[i])


LOGIT_CONFIGS = [CONFIGS[i] for i in (0, 1, 8, 10, 11, 12, 15)]  # each method family, both layouts, exact budgets


@pytest.mark.parametrize("config", LOGIT_CONFIGS, ids=_config_id)
def test_logits_equal_our_tree(tiny, model, converted_llava_next, config):
    """A batch of two prompts (row- and column-padded images): our tree right-pads, the
    plug-in left-pads; every real token's logits agree."""
    tok, _, proc, _ = tiny
    hf, comp = converted_llava_next, _comp(config)
    imgs = [random_image(1000, 600, seed=1), random_image(600, 1000, seed=2)]
    pixels = process_images(imgs, proc, model.config)
    rows = [tokenizer_image_token(p, tok, return_tensors="pt") for p in PROMPTS]
    adapter = llava.hf.adapter_for(hf)
    hf_rows = [_hf_prompt(hf, r, adapter.layout_for_size((im.size[1], im.size[0])).num_tokens()) for r, im in zip(rows, imgs)]
    ids, mask = _pad(rows, tok.pad_token_id, "right")
    hf_ids, hf_mask = _pad(hf_rows, 0, "left")
    model.compressor = comp
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask, images=pixels, image_sizes=[im.size for im in imgs])
        kwargs, records = llava.hf.prepare_inputs(
            hf, comp, input_ids=hf_ids, attention_mask=hf_mask, pixel_values=pixels, image_sizes=_hf_sizes(imgs))
        theirs = hf(**kwargs).logits[..., : ours.logits.shape[-1]]
    for b in range(2):
        n = int(kwargs["attention_mask"][b].sum())
        mine = ours.logits[b, :n]
        got = theirs[b, -n:]
        assert (got - mine).abs().max().item() <= 1e-4, (b, comp)
        assert records[b].info() == model.last_images[b].info()


def _pad(rows, pad_id: int, side: str):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, sl], mask[i, sl] = r, 1
    return ids, mask
