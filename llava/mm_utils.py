"""Image and prompt utilities for LLaVA-NeXT ("AnyRes") models.

Pinpoints and image sizes are ``(width, height)`` in pixels, as in the original release.
Grid shapes are ``(grid_w, grid_h)`` in crops; token maps are ``(rows, cols)``.
"""

from __future__ import annotations

import ast
import base64
import binascii
import math
import os
import re
from collections.abc import Sequence
from io import BytesIO

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from llava.constants import IMAGE_TOKEN_INDEX

Size = tuple[int, int]


class ImageLoadError(ValueError):
    """An image file (or base64 string) that cannot be decoded."""


# ----------------------------------------------------------------------------- image loading


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16- and 32-bit greyscale are rescaled to 8 bits (PIL's own ``convert`` would clip them to
    white); palette, greyscale, CMYK, YCbCr and RGBA go through ``convert("RGB")`` like the
    original LLaVA loader (alpha is dropped, not composited).
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        hi = 65535.0 if image.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if image.mode == "F" and hi <= 1.0:
            hi = 1.0
        arr8 = np.clip(np.round(arr / hi * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def load_image(source: str | os.PathLike | bytes | Image.Image) -> Image.Image:
    """Open an image from a path, a ``data:``/base64 string or bytes, as RGB.

    Raises :class:`ImageLoadError` naming the file when it is missing, cannot be decoded, or is
    a decompression bomb by PIL's limit.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    name = "<bytes>"
    try:
        if isinstance(source, bytes):
            fh = BytesIO(source)
        elif isinstance(source, str) and source.startswith("data:image"):
            name = "<data URI>"
            fh = BytesIO(base64.b64decode(source.split(",", 1)[1]))
        else:
            name = os.fspath(source)
            if not os.path.isfile(name):
                raise ImageLoadError(f"image file not found: {name}")
            fh = name
        prev = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            with Image.open(fh) as im:
                im.load()
                return to_rgb(im)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = prev
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # not OSErrors
        raise ImageLoadError(f"image {name} refused: {e}") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageLoadError(f"cannot read image {name}: {e}") from e


def load_image_from_base64(image: str) -> Image.Image:
    """Decode a base64 image (MMBench TSVs); bad base64 raises :class:`ImageLoadError`."""
    try:
        data = base64.b64decode(image, validate=False)
    except (binascii.Error, ValueError, TypeError) as e:
        raise ImageLoadError(f"cannot decode base64 image data: {e}") from e
    return load_image(data)


# ----------------------------------------------------------------------------- AnyRes geometry


def parse_grid_pinpoints(grid_pinpoints, patch_size: int = 336) -> list[Size]:
    """Normalise ``image_grid_pinpoints``: a list of (w, h), its string form, or the
    LLaVA-OneVision range form ``"(1x1),...,(3x3)"`` (in units of ``patch_size``)."""
    if isinstance(grid_pinpoints, str):
        if "x" in grid_pinpoints:
            found = [tuple(map(int, m)) for m in re.findall(r"\((\d+)x(\d+)\)", grid_pinpoints)]
            if len(found) != 2:
                raise ValueError(f"cannot parse grid pinpoints range {grid_pinpoints!r}")
            (a0, b0), (a1, b1) = found
            return [(i * patch_size, j * patch_size) for i in range(a0, a1 + 1) for j in range(b0, b1 + 1)]
        grid_pinpoints = ast.literal_eval(grid_pinpoints)
    pins = [(int(w), int(h)) for w, h in grid_pinpoints]
    if not pins:
        raise ValueError("image_grid_pinpoints is empty")
    return pins


def select_best_resolution(original_size: Size, possible_resolutions: Sequence[Size]) -> Size:
    """Pick the pinpoint that keeps the most image pixels after a fit-inside resize,
    ties broken by the least wasted canvas area. Sizes are (width, height)."""
    ow, oh = original_size
    best, best_eff, best_waste = None, -1, math.inf
    for w, h in possible_resolutions:
        scale = min(w / ow, h / oh)
        eff = min(int(ow * scale) * int(oh * scale), ow * oh)
        waste = w * h - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (w, h), eff, waste
    return best


def get_anyres_image_grid_shape(image_size: Size, grid_pinpoints, patch_size: int) -> Size:
    """``(grid_w, grid_h)``: the number of ``patch_size`` crops across and down."""
    w, h = select_best_resolution(tuple(image_size), parse_grid_pinpoints(grid_pinpoints, patch_size))
    return w // patch_size, h // patch_size


def unpad_bounds(image_size: Size, rows: int, cols: int) -> tuple[int, int, int, int]:
    """Rows/columns of a ``rows × cols`` padded token canvas that show the image.

    Returns ``(top, bottom, left, right)`` (half-open) following LLaVA-NeXT's ``unpad_image``:
    the letterbox added by :func:`resize_and_pad_image` is removed on one axis, with
    ``pad = (size - new_size) // 2`` cut from both ends.
    """
    ow, oh = image_size
    if ow / oh > cols / rows:
        new_h = int(oh * (cols / ow))
        pad = (rows - new_h) // 2
        return pad, rows - pad, 0, cols
    new_w = int(ow * (rows / oh))
    pad = (cols - new_w) // 2
    return 0, rows, pad, cols - pad


def unpad_image(tensor: torch.Tensor, original_size: Size) -> torch.Tensor:
    """Crop the letterbox off a ``[C, rows, cols]`` feature map; ``original_size`` is (w, h)."""
    top, bottom, left, right = unpad_bounds(original_size, tensor.shape[1], tensor.shape[2])
    return tensor[:, top:bottom, left:right]


def anyres_token_count(
    image_size: Size, grid_pinpoints, patch_size: int = 336, tokens_per_side: int = 24, newline: bool = True
) -> int:
    """Visual tokens LLaVA-NeXT (``spatial_unpad``) produces for an image of ``image_size``:
    thumbnail + unpadded crop canvas + one newline per remaining row."""
    gw, gh = get_anyres_image_grid_shape(image_size, grid_pinpoints, patch_size)
    top, bottom, left, right = unpad_bounds(image_size, gh * tokens_per_side, gw * tokens_per_side)
    rows, cols = bottom - top, right - left
    return tokens_per_side**2 + rows * (cols + int(newline))


# ----------------------------------------------------------------------------- preprocessing


def resize_and_pad_image(image: Image.Image, target_resolution: Size) -> Image.Image:
    """Resize to fit inside ``target_resolution`` (w, h) keeping the aspect ratio, then paste
    centred on a black canvas of exactly that size."""
    ow, oh = image.size
    tw, th = target_resolution
    sw, sh = tw / ow, th / oh
    if sw < sh:
        nw, nh = tw, min(math.ceil(oh * sw), th)
    else:
        nw, nh = min(math.ceil(ow * sh), tw), th
    resized = image.resize((nw, nh))
    canvas = Image.new("RGB", (tw, th), (0, 0, 0))
    canvas.paste(resized, ((tw - nw) // 2, (th - nh) // 2))
    return canvas


def divide_to_patches(image: Image.Image, patch_size: int) -> list[Image.Image]:
    """Square tiles of ``patch_size`` in raster order (left to right, top to bottom)."""
    w, h = image.size
    return [
        image.crop((x, y, x + patch_size, y + patch_size))
        for y in range(0, h, patch_size)
        for x in range(0, w, patch_size)
    ]


def expand2square(image: Image.Image, background_color) -> Image.Image:
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), background_color)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def _processor_side(processor) -> int:
    size = getattr(processor, "crop_size", None) or getattr(processor, "size", None)
    if isinstance(size, dict):
        return int(size.get("height") or size.get("shortest_edge"))
    if hasattr(size, "height") and size.height:
        return int(size.height)
    if hasattr(size, "shortest_edge") and size.shortest_edge:
        return int(size.shortest_edge)
    return int(size)


def _pixel_values(processor, images: list[Image.Image]) -> torch.Tensor:
    return processor(images=images, return_tensors="pt")["pixel_values"]


def process_anyres_image(image: Image.Image, processor, grid_pinpoints) -> torch.Tensor:
    """``[1 + gw·gh, 3, S, S]``: the thumbnail (whole image squashed to S×S) then the crops."""
    side = _processor_side(processor)
    best = select_best_resolution(image.size, parse_grid_pinpoints(grid_pinpoints, side))
    crops = divide_to_patches(resize_and_pad_image(image, best), side)
    thumbnail = image.resize((side, side))
    return _pixel_values(processor, [thumbnail, *crops])


def process_images(
    images: list[Image.Image], image_processor, model_cfg, device=None, dtype: torch.dtype | None = None
) -> torch.Tensor | list[torch.Tensor]:
    """Preprocess images the way the model config says (``image_aspect_ratio``).

    For ``anyres`` the result is a list of ``[views, 3, S, S]`` tensors (stacked into one
    tensor when all images have the same number of views, as the original code does).
    ``device``/``dtype`` (optional) move the result where the model is.
    """
    images = [to_rgb(im) for im in images]
    aspect = getattr(model_cfg, "image_aspect_ratio", None)
    if aspect == "pad":
        fill = tuple(int(x * 255) for x in image_processor.image_mean)
        out = [_pixel_values(image_processor, [expand2square(im, fill)])[0] for im in images]
    elif aspect and aspect.startswith("anyres"):
        out = [process_anyres_image(im, image_processor, model_cfg.image_grid_pinpoints) for im in images]
    else:
        return _pixel_values(image_processor, images).to(device=device, dtype=dtype)
    out = [x.to(device=device, dtype=dtype) for x in out]
    if all(x.shape == out[0].shape for x in out):
        return torch.stack(out, dim=0)
    return out


# ----------------------------------------------------------------------------- text


def tokenizer_image_token(
    prompt: str, tokenizer, image_token_index: int = IMAGE_TOKEN_INDEX, return_tensors: str | None = None
):
    """Tokenize ``prompt`` with each ``<image>`` replaced by one ``image_token_index`` id.

    The pieces around the placeholders are tokenized separately, as the original tree does
    with its slow SentencePiece tokenizer (so every piece gets SentencePiece's leading ``▁``,
    also one that starts with a space — restored for fast tokenizers that drop it, see
    :mod:`llava.model.tokenizer`); the BOS the tokenizer adds is kept on the first piece only.
    """
    from llava.model.tokenizer import sentencepiece_prefix_fix

    pieces = [tokenizer(sentencepiece_prefix_fix(tokenizer, chunk)).input_ids for chunk in prompt.split("<image>")]
    bos = tokenizer.bos_token_id
    ids: list[int] = []
    for i, piece in enumerate(pieces):
        if i > 0:
            ids.append(image_token_index)
            if bos is not None and piece and piece[0] == bos:
                piece = piece[1:]
        ids.extend(piece)
    if return_tensors is None:
        return ids
    if return_tensors == "pt":
        return torch.tensor(ids, dtype=torch.long)
    raise ValueError(f"unsupported return_tensors {return_tensors!r} (only 'pt' or None)")


def get_model_name_from_path(model_path: str) -> str:
    """``.../llava-v1.6-vicuna-7b`` → ``llava-v1.6-vicuna-7b``; a trailing
    ``checkpoint-N`` folder is prefixed with its parent's name."""
    parts = model_path.strip("/").split("/")
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


class KeywordsStoppingCriteria:
    """Stop generation once any keyword appears at the end of every sequence."""

    def __init__(self, keywords: list[str], tokenizer, input_ids: torch.Tensor):
        self.keywords = keywords
        self.tokenizer = tokenizer
        self.start_len = input_ids.shape[1]

    def __call__(self, output_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        new = self.tokenizer.batch_decode(output_ids[:, self.start_len :][:, -8:], skip_special_tokens=True)
        done = [any(k in text for k in self.keywords) for text in new]
        return torch.tensor(done, dtype=torch.bool, device=output_ids.device)
