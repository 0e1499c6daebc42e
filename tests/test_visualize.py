"""The Figure-4 visualiser: token masks equal the kept indices; the picture shows exactly them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from llava.analysis import visualize as vis
from llava.compression import COMPRESSORS, build_compressor
from llava.compression.in_llm import InLLMCompressor
from llava.mm_utils import process_images

RED = (200, 30, 30)

#: the methods acting before the LLM (the in-LLM ones have their own tests)
VISION_METHODS = [n for n, c in COMPRESSORS.items() if not issubclass(c, InLLMCompressor)]


def compress(tiny, model, method, size, layout="faithful"):
    """Compress a random-noise image of ``size``; returns ``(image, record)``."""
    _, _, proc, _ = tiny
    opts = {"layout": layout} if method == "none" else {"layout": layout, "retention_ratio": 0.25}
    model.compressor = build_compressor(method, **opts)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    with torch.inference_mode():
        model.images_to_tokens(process_images([image], proc, model.config), [image.size])
    return image, model.last_images[0]


def expected_masks(record):
    """Masks rebuilt from the packed index (faithful layout: tokens at their true positions)."""
    lay = record.layout
    s, n_tok = lay.side, lay.tokens_per_view
    thumb = np.zeros((s, s), bool)
    canvas = np.zeros((lay.grid_h * s, lay.grid_w * s), bool)
    for i in record.index.tolist():
        if i < n_tok:
            thumb[divmod(i, s)] = True
        elif i < lay.n_views * n_tok:
            j, t = divmod(i - n_tok, n_tok)
            (gy, gx), (r, c) = divmod(j, lay.grid_w), divmod(t, s)
            canvas[gy * s + r, gx * s + c] = True
    return thumb, canvas


@pytest.mark.parametrize("method", VISION_METHODS)
@pytest.mark.parametrize("size", [(1000, 600), (400, 1500)])
def test_masks_equal_kept_indices(tiny, model, method, size):
    _, record = compress(tiny, model, method, size)
    thumb, canvas = vis.keep_masks(record)
    want_thumb, want_canvas = expected_masks(record)
    assert np.array_equal(thumb.numpy(), want_thumb) and np.array_equal(canvas.numpy(), want_canvas)
    newlines = int((record.index == record.layout.n_views * record.layout.tokens_per_view).sum())
    assert int(thumb.sum()) + int(canvas.sum()) + newlines == record.index.shape[0]
    labels = vis.crop_labels(record)
    assert len(labels) == record.layout.n_crops
    assert all(lab.startswith("r" if method == "globalcom2" else "kept") for lab in labels)


def test_reference_layout_masks_count(tiny, model):
    _, record = compress(tiny, model, "globalcom2", (1000, 600), layout="reference")
    thumb, canvas = vis.keep_masks(record)
    nl = int((record.index == record.layout.n_views * record.layout.tokens_per_view).sum())
    assert int(thumb.sum()) + int(canvas.sum()) == record.index.shape[0] - nl


def kept_cells(panel: np.ndarray, cell: int) -> np.ndarray:
    """Cells whose centre pixel still has the image colour (not greyed out or letterboxed)."""
    centres = panel[cell // 2 :: cell, cell // 2 :: cell].astype(int)
    return (np.abs(centres - np.array(RED)).max(-1) <= 3)


@pytest.mark.parametrize("method", ["globalcom2", "uniform_random"])
def test_picture_greys_out_exactly_the_dropped_tokens(tiny, model, method):
    _, record = compress(tiny, model, method, (1000, 600))
    lay = record.layout
    # Drawn over a plain red picture of the same size, so kept cells are exactly red.
    pic = vis.render_selection(Image.new("RGB", (1000, 600), RED), record, model.config.image_grid_pinpoints, labels=False)
    assert pic.size == vis.output_size(lay)
    arr = np.asarray(pic)
    thumb, canvas = vis.keep_masks(record)
    y0, x_thumb, x_canvas = vis.HEADER, vis.MARGIN, 2 * vis.MARGIN + 336
    got_thumb = kept_cells(arr[y0 : y0 + 336, x_thumb : x_thumb + 336], 14)
    got_canvas = kept_cells(arr[y0 : y0 + lay.grid_h * 336, x_canvas : x_canvas + lay.grid_w * 336], 14)
    assert np.array_equal(got_thumb, thumb.numpy())
    assert np.array_equal(got_canvas, canvas.numpy())
    assert got_thumb.sum() + got_canvas.sum() == record.info()["thumbnail_kept"] + sum(record.info()["crop_kept"])


def test_cli_writes_png(tiny_ckpt, tmp_path):
    img = tmp_path / "im.png"
    Image.new("RGB", (1000, 300), RED).save(img)
    out = tmp_path / "sel.png"
    vis.main(["--model-path", tiny_ckpt, "--image-file", str(img), "--retention-ratio", "0.25", "--out", str(out),
              "--device", "cpu", "--tau", "5"])
    from llava.compression import AnyResLayout
    from llava.testing.tiny_checkpoint import V16_PINPOINTS

    assert Image.open(out).size == vis.output_size(AnyResLayout.for_image((1000, 300), V16_PINPOINTS))
    assert vis.output_size(AnyResLayout.for_image((1000, 300), V16_PINPOINTS)) == (12 + 336 + 12 + 1008 + 12, 44 + 336 + 12)


@pytest.mark.parametrize("method", ["globalcom2", "evs"])
def test_frame_strip_greys_out_exactly_the_dropped_video_tokens(method):
    from llava.analysis import frame_strip as fs
    from llava.compression import VideoLayout
    from llava.compression.scoring import neg_cos_scores

    lay = VideoLayout(6, 3, 4, newline=True)
    x = torch.randn(6, 12, 8, generator=torch.Generator().manual_seed(0)) + torch.randn(6, 1, 8) * 2
    record = build_compressor(method, retention_ratio=0.3).compress(x, torch.zeros(8), lay, neg_cos_scores(x))
    frames = np.full((12, 30, 40, 3), RED, np.uint8)  # 12 sampled frames: two per record frame (as Qwen)
    pic = fs.render_frame_strip(frames, record, cell=16, per_row=4, labels=False)
    arr = np.asarray(pic)
    masks = fs.frame_masks(record)
    for f in range(6):
        x0 = vis.MARGIN + (f % 4) * (4 * 16 + vis.MARGIN)
        y0 = vis.HEADER + (f // 4) * (3 * 16 + fs.LABEL_H + vis.MARGIN) + fs.LABEL_H
        assert np.array_equal(kept_cells(arr[y0 : y0 + 48, x0 : x0 + 64], 16), masks[f].numpy())
    assert int(masks.sum()) == sum(record.info()["frame_kept"])
    labels = fs.frame_labels(record)
    assert len(labels) == 6 and all(lab.startswith("r" if method == "globalcom2" else "kept") for lab in labels)
    with pytest.raises(ValueError, match="5 sampled frames for a record of 6 frames"):
        fs.render_frame_strip(frames[:5], record)
