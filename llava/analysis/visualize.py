"""Which visual tokens a compression method keeps, drawn like Figure 4 of the paper.

``python -m llava.analysis.visualize --model-path DIR --image-file IMG --retention-ratio 0.25
[--compression globalcom2|fastervlm|uniform_random|none] [--out selection.png]`` plus any other
compression flag (``--tau``, ``--alpha``, ``--allocation``, ``--score``, ...). With
``--video-file CLIP --num-frames F`` (and a transformers OneVision / Qwen2-VL / Qwen2.5-VL
folder) it draws a strip of the frames instead (:mod:`.frame_strip`).

The PNG shows the thumbnail view (left: the whole image squashed to one view) and the crop
canvas (right: the image resized and letterboxed to the AnyRes resolution, with the crop grid),
every token a ``patch × patch`` pixel cell of its view (14 px for CLIP-L/14-336). Dropped tokens
are greyed out; letterbox cells (removed by LLaVA-NeXT's unpadding, never tokens) are darkened.
Each crop is labelled with its budget ``r_j`` when the method allocates per-crop budgets
(GlobalCom²), otherwise with the fraction of its tokens kept.

:func:`keep_masks` (the token masks as 2-D maps) and :func:`render_selection` (the drawing) are
plain functions of a :class:`llava.compression.CompressedImage` record, the one the model
leaves in ``model.last_images`` after ``images_to_tokens``. For an in-LLM method (FastV,
SparseVLM, PDrop, or a pipeline ending in one) the prompt ``--query`` is run through the
prefill and the picture shows the tokens that reach the LLM's last layer.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from llava.compression.cli import add_compression_args, compressor_from_args
from llava.compression.in_llm import llm_stage, surviving_selection
from llava.mm_utils import parse_grid_pinpoints, resize_and_pad_image, select_best_resolution
from llava.utils import input_device

MARGIN = 12
HEADER = 44
DROPPED_RGB = (215, 215, 215)
DROPPED_ALPHA = 0.82
LETTERBOX_RGB = (40, 40, 40)
LETTERBOX_ALPHA = 0.6
GRID_RGB = (255, 255, 255)


def keep_masks(record) -> tuple[torch.Tensor, torch.Tensor]:
    """``(thumb_mask [side, side], canvas_mask [grid_h·side, grid_w·side])`` bool on the CPU.

    ``thumb_mask[r, c]``: thumbnail token ``r·side + c`` is kept. ``canvas_mask[R, C]``: the
    crop token drawn at canvas cell ``(R, C)`` — crop ``(R // side)·grid_w + C // side``, grid
    position ``(R % side)·side + C % side`` — is kept. Letterbox cells are ``False``. For a
    single-view image the canvas mask is ``[0, 0]``.
    """
    lay = record.layout
    s = lay.side
    thumb_keep, crop_keep = surviving_selection(record)
    thumb = thumb_keep.detach().to("cpu", torch.bool).reshape(s, s)
    if lay.n_crops == 0:
        return thumb, torch.zeros(0, 0, dtype=torch.bool)
    if crop_keep.shape[0] != lay.n_crops:
        raise ValueError(
            f"the record holds {crop_keep.shape[0]} crop selections for {lay.n_crops} crops "
            "(a model without spatial_unpad packing has no per-crop selection)"
        )
    crops = crop_keep.detach().to("cpu", torch.bool).reshape(lay.grid_h, lay.grid_w, s, s)
    return thumb, crops.permute(0, 2, 1, 3).reshape(lay.grid_h * s, lay.grid_w * s)


def crop_labels(record) -> list[str]:
    """Per crop (raster order): ``r_j`` when the method has budgets, else the kept fraction."""
    lay, sel = record.layout, record.selection
    if lay.n_crops == 0:
        return []
    if sel.budgets is not None and record.llm is None:
        return [f"r{j + 1} = {100 * float(b):.1f}%" for j, b in enumerate(sel.budgets.detach().cpu().tolist())]
    from llava.compression.functional import crop_valid_mask

    valid = crop_valid_mask(lay).sum(1).tolist()
    kept = surviving_selection(record)[1].detach().cpu().sum(1).tolist()
    return [f"kept {100 * k / v:.1f}%" if v else "empty" for k, v in zip(kept, valid)]


def output_size(layout, view_px: int = 336) -> tuple[int, int]:
    """``(width, height)`` in pixels of :func:`render_selection`'s picture for ``layout``."""
    canvas_w, canvas_h = layout.grid_w * view_px, layout.grid_h * view_px
    width = MARGIN + view_px + MARGIN + (canvas_w + MARGIN if layout.n_crops else 0)
    height = HEADER + max(view_px, canvas_h) + MARGIN
    return width, height


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _shade(pixels: np.ndarray, mask: np.ndarray, rgb, alpha: float, cell: int) -> None:
    """Blend ``rgb`` with opacity ``alpha`` over every ``cell × cell`` block where ``mask``."""
    full = np.kron(mask.astype(np.uint8), np.ones((cell, cell), dtype=np.uint8)).astype(bool)
    h, w = min(full.shape[0], pixels.shape[0]), min(full.shape[1], pixels.shape[1])
    full = full[:h, :w]
    region = pixels[:h, :w]
    region[full] = (1 - alpha) * region[full] + alpha * np.asarray(rgb, dtype=np.float32)


def render_selection(image: Image.Image, record, grid_pinpoints, view_px: int = 336, title: str | None = None,
                     labels: bool = True) -> Image.Image:
    """The picture: thumbnail (left) and crop canvas (right) with dropped tokens greyed out.

    ``image`` is the original picture; ``record`` the :class:`~llava.compression.CompressedImage`
    of that image; ``grid_pinpoints`` the model's ``image_grid_pinpoints``; ``view_px`` the
    vision tower's input size (336). ``labels=False`` leaves out the per-crop text boxes.
    """
    lay = record.layout
    cell = view_px // lay.side
    thumb_mask, canvas_mask = keep_masks(record)
    image = image.convert("RGB")

    thumb = np.asarray(image.resize((view_px, view_px)), dtype=np.float32).copy()
    _shade(thumb, ~thumb_mask.numpy(), DROPPED_RGB, DROPPED_ALPHA, cell)

    width, height = output_size(lay, view_px)
    out = Image.new("RGB", (width, height), (255, 255, 255))
    out.paste(Image.fromarray(thumb.clip(0, 255).astype(np.uint8)), (MARGIN, HEADER))
    draw = ImageDraw.Draw(out)
    small, big = _font(13), _font(15)
    n_thumb = int(thumb_mask.sum())
    draw.text((MARGIN, HEADER - 18), f"thumbnail: {n_thumb}/{lay.tokens_per_view} kept", fill=(0, 0, 0), font=small)

    if lay.n_crops:
        best = select_best_resolution(image.size, parse_grid_pinpoints(grid_pinpoints, view_px))
        if (best[0] // view_px, best[1] // view_px) != (lay.grid_w, lay.grid_h):
            raise ValueError(f"the image tiles into {best} px, but the record's grid is {lay.grid_w}x{lay.grid_h}")
        canvas = np.asarray(resize_and_pad_image(image, best), dtype=np.float32).copy()
        letterbox = np.ones(canvas_mask.shape, dtype=bool)
        letterbox[lay.top : lay.bottom, lay.left : lay.right] = False
        _shade(canvas, ~canvas_mask.numpy() & ~letterbox, DROPPED_RGB, DROPPED_ALPHA, cell)
        _shade(canvas, letterbox, LETTERBOX_RGB, LETTERBOX_ALPHA, cell)
        x0, y0 = 2 * MARGIN + view_px, HEADER
        out.paste(Image.fromarray(canvas.clip(0, 255).astype(np.uint8)), (x0, y0))
        cw, ch = lay.grid_w * view_px, lay.grid_h * view_px
        for gx in range(lay.grid_w + 1):
            x = x0 + min(gx * view_px, cw - 1)
            draw.line([(x, y0), (x, y0 + ch - 1)], fill=GRID_RGB, width=2)
        for gy in range(lay.grid_h + 1):
            y = y0 + min(gy * view_px, ch - 1)
            draw.line([(x0, y), (x0 + cw - 1, y)], fill=GRID_RGB, width=2)
        n_crop = int(canvas_mask.sum())
        n_valid = (lay.bottom - lay.top) * (lay.right - lay.left)
        draw.text((x0, HEADER - 18), f"crops {lay.grid_w}x{lay.grid_h}: {n_crop}/{n_valid} kept",
                  fill=(0, 0, 0), font=small)
        if labels:
            for j, text in enumerate(crop_labels(record)):
                gy, gx = divmod(j, lay.grid_w)
                tx, ty = x0 + gx * view_px + 6, y0 + gy * view_px + 6
                box = draw.textbbox((tx, ty), text, font=big)
                draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(20, 20, 20))
                draw.text((tx, ty), text, fill=(255, 230, 0), font=big)
    if title:
        draw.text((MARGIN, 6), title, fill=(0, 0, 0), font=big)
    return out


def selection_title(record, compressor) -> str:
    info = record.info()
    if record.llm is not None:
        info["tokens"] = info["llm"]["tokens_last_layer"]
    name = "none" if compressor is None else compressor.name
    ratio = getattr(compressor, "retention_ratio", None)
    head = name if ratio is None else f"{name}, R = {ratio:g}"
    return (f"{head}: {info['tokens']}/{info['tokens_uncompressed']} visual tokens "
            f"({100 * info['tokens'] / info['tokens_uncompressed']:.1f}%)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m llava.analysis.visualize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", required=True,
                    help="local LLaVA-NeXT checkpoint folder (--image-file), or a transformers LLaVA-OneVision / "
                         "Qwen2-VL / Qwen2.5-VL folder (--video-file)")
    ap.add_argument("--model-name", default=None)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--image-file")
    src.add_argument("--video-file", help="draw a strip of the video's frames, each labelled with its budget r_f")
    ap.add_argument("--num-frames", type=int, default=8, help="frames sampled from --video-file (default 8)")
    ap.add_argument("--out", default="selection.png", help="PNG to write (default selection.png)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-labels", action="store_true", help="leave out the per-crop r_j boxes")
    ap.add_argument("--query", default="Describe the image in detail.",
                    help="images: the question run through the prefill for in-LLM methods (which rank with it)")
    add_compression_args(ap)
    ap.set_defaults(compression="globalcom2")
    return ap


def main(argv=None) -> str:
    from llava.mm_utils import get_model_name_from_path, load_image, process_images
    from llava.model.builder import load_pretrained_model

    args = build_parser().parse_args(argv)
    compressor = compressor_from_args(args)
    if args.video_file is not None:
        return draw_video(args, compressor)
    name = args.model_name or get_model_name_from_path(args.model_path)
    tokenizer, model, processor, _ = load_pretrained_model(args.model_path, None, name, device=args.device,
                                                           compressor=compressor)
    image = load_image(args.image_file)
    views = process_images([image], processor, model.config, device=input_device(model), dtype=model.dtype)
    records = []
    with torch.inference_mode():
        if llm_stage(compressor) is None:
            model.images_to_tokens(views, [image.size], image_records=records)
        else:  # the in-LLM stage ranks with the prompt: run the prefill
            from llava.conversation import build_chat_prompt, default_conv_mode
            from llava.mm_utils import tokenizer_image_token

            prompt = build_chat_prompt(args.query, model.config, default_conv_mode(name))
            ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None].to(input_device(model))
            model(ids, images=views, image_sizes=[image.size], image_records=records, use_cache=False)
    record = records[0]
    view_px = model.get_vision_tower().config.image_size
    picture = render_selection(image, record, model.config.image_grid_pinpoints, view_px,
                               selection_title(record, compressor), labels=not args.no_labels)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    picture.save(args.out)
    print(f"{selection_title(record, compressor)}; wrote {args.out}", file=sys.stderr)
    return args.out


def draw_video(args, compressor) -> str:
    """``--video-file``: run the transformers model on the sampled frames, draw the frame strip
    (the vision-stage selection; an in-LLM stage, which would need the prefill, is refused)."""
    import llava.hf

    if llm_stage(compressor) is not None:
        raise SystemExit(f"error: the frame strip draws vision-stage selections; {compressor.name} prunes "
                         "inside the LLM (draw it on an image, or pick a vision-stage method)")
    from llava.eval.run_video import build_prompt, load_model, read_frames
    from llava.hf.processors import load_processor

    from .frame_strip import render_frame_strip

    processor = load_processor(args.model_path)
    frames, meta = read_frames(processor, args.video_file, args.num_frames)
    model = load_model(args.model_path, args.device, None)
    inputs = processor(videos=[frames], video_metadata=[meta], text=[build_prompt(processor, "Describe the video.")],
                       return_tensors="pt").to(input_device(model))
    with torch.inference_mode():
        _, records = llava.hf.prepare_inputs(model, compressor, **inputs)
    record = records[-1]
    title = selection_title(record, compressor)
    picture = render_frame_strip(frames, record, title=title, labels=not args.no_labels,
                                 frame_indices=[int(i) for i in meta.frames_indices])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    picture.save(args.out)
    print(f"{title}; wrote {args.out}", file=sys.stderr)
    return args.out


if __name__ == "__main__":
    main()
