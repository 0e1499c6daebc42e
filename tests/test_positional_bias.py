"""The positional-bias study's mechanics on the tiny model: the reversed crop order feeds the
same tokens, content-driven selection does not move with the order, the report and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from llava.analysis import positional_bias as pb
from llava.compression import build_compressor
from llava.mm_utils import process_images


def picture(size, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_reverse_order_feeds_the_same_tokens_mirrored(tiny, model):
    tok, _, proc, _ = tiny
    img = picture((1000, 600), 3)
    px = process_images([img], proc, model.config)
    recs = {}
    with torch.no_grad():
        for order in pb.ORDERS:
            recs[order] = []
            model.images_to_tokens(px, [img.size], compressor=build_compressor("none", crop_order=order),
                                   image_records=recs[order])
    fwd, rev = recs["forward"][0], recs["reverse"][0]
    assert rev.kept is None and fwd.kept is not None
    assert torch.equal(fwd.index.sort().values, rev.index.sort().values)
    n_tok = fwd.layout.tokens_per_view
    crop_of = lambda idx: [(i - n_tok) // n_tok for i in idx.tolist() if n_tok <= i < fwd.layout.n_views * n_tok]  # noqa: E731
    first_f, first_r = crop_of(fwd.index)[0], crop_of(rev.index)[0]
    assert (first_f, first_r) == (0, fwd.layout.n_crops - 1)


def test_content_driven_selection_is_the_same_in_both_orders(tiny, model):
    tok, _, proc, _ = tiny
    img = picture((1000, 600), 4)
    methods = {"globalcom2": {"retention_ratio": 0.25}, "fastv": {"retention_ratio": 0.25, "k": 1}}
    report = pb.study(model, tok, proc, [img], "What is in the image?", methods)
    g, f = report["methods"]["globalcom2"], report["methods"]["fastv"]
    assert g["same_selection_share"] == 1.0
    assert len(g["crops"]) == 4 and all(r["kept_forward"] == r["kept_reverse"] for r in g["crops"])
    for rows in (g["crops"], f["crops"]):
        assert [(r["position_forward"], r["position_reverse"]) for r in rows] == [(0, 3), (1, 2), (2, 1), (3, 0)]
    # FastV: the counts reported are the tokens reaching the last layer (≈ R of every crop's tokens overall)
    visible = sum(r["visible"] for r in f["crops"])
    kept = sum(r["kept_forward"] for r in f["crops"])
    assert 0.15 * visible < kept < 0.35 * visible
    by_pos = g["by_position"]
    assert by_pos["forward"] == by_pos["reverse"][::-1]  # GlobalCom²: the shares just move with the crops
    assert g["by_content"][0]["forward"] == g["by_content"][0]["reverse"]


def test_cli_writes_json_and_plot(tiny_ckpt, tmp_path):
    path = tmp_path / "a.png"
    picture((672, 336), 5).save(path)
    out = tmp_path / "study"
    report = pb.main(["--model-path", tiny_ckpt, "--image-file", str(path), "--methods", "globalcom2,fastv",
                      "--retention-ratio", "0.3", "--fastv-k", "1", "--out-dir", str(out), "--device", "cpu"])
    data = json.loads((out / "positional_bias.json").read_text())
    assert data["methods"]["fastv"]["by_position"] == report["methods"]["fastv"]["by_position"]
    assert data["options"]["fastv"]["k"] == 1 and data["options"]["globalcom2"]["retention_ratio"] == 0.3
    assert (out / "positional_bias.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="no method of"):
        pb.main(["--model-path", tiny_ckpt, "--image-file", str(path), "--methods", "globalcom2",
                 "--fastv-k", "1", "--out-dir", str(out)])
    with pytest.raises(SystemExit, match="set by the study"):
        pb.main(["--model-path", tiny_ckpt, "--image-file", str(path), "--crop-order", "reverse", "--out-dir", str(out)])
