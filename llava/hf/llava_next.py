"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``, e.g. ``llava-hf/llava-v1.6-*-hf``).

Thumbnail + AnyRes crops of a CLIP tower, ``spatial_unpad`` canvas with a newline per row —
the layout of our own tree, so the selection is the same code and the same numbers: the
compressor gets the vision tower's patch features and projects only the kept tokens. The grid
and the unpadding come from transformers' own helpers (``get_anyres_image_grid_shape``,
``unpad_image``), so every image size is laid out exactly as the stock model lays it out.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from llava.compression import AnyResLayout, CompressedImage, Compressor, ScoreRequest
from llava.compression.scoring import (
    cls_attention_scores,
    layer_received_attention,
    neg_cos_scores,
    request_layers,
    tower_scores,
    wants_tower_scores,
)
from llava.utils import execution_device, onloaded

from .core import Adapter, register


def _host_module(model: nn.Module):
    """The transformers module that defines ``model``'s class (its own geometry helpers)."""
    for klass in type(model).__mro__:
        if klass.__module__.startswith("transformers.models."):
            return sys.modules[klass.__module__]
    raise TypeError(f"{type(model).__name__} is not a transformers model class")


def unpad_bounds(unpad_image, image_size_hw: list[int], rows: int, cols: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the ``rows × cols`` token canvas that the host's
    ``unpad_image`` keeps for an image of ``image_size_hw`` — read off by unpadding a canvas of
    cell indices, so the host's own rounding decides."""
    canvas = torch.arange(rows * cols).view(1, rows, cols)
    kept = unpad_image(canvas, list(image_size_hw))[0]
    top, left = divmod(int(kept[0, 0]), cols)
    return top, top + kept.shape[0], left, left + kept.shape[1]


def _as_list(x) -> list:
    return x.tolist() if hasattr(x, "tolist") else list(x)


def encoder_layers(tower: nn.Module) -> nn.ModuleList:
    """The encoder layers of a CLIP / SigLIP vision model (either nesting)."""
    for owner in (tower, getattr(tower, "vision_model", None)):
        enc = getattr(owner, "encoder", None) if owner is not None else None
        if enc is not None and hasattr(enc, "layers"):
            return enc.layers
    raise TypeError(f"cannot find the encoder layers of {type(tower).__name__}")


@register
class LlavaNextAdapter(Adapter):
    class_names: ClassVar[tuple[str, ...]] = ("LlavaNextForConditionalGeneration",)
    consumed: ClassVar[tuple[str, ...]] = (
        "pixel_values", "image_sizes", "vision_feature_layer", "vision_feature_select_strategy",
    )
    layouts: ClassVar[tuple[str, ...]] = ("faithful", "reference")

    # ------------------------------------------------------------------ configuration

    def _option(self, inputs: dict[str, Any], name: str):
        value = inputs.get(name)
        return getattr(self.model.config, name) if value is None else value

    @property
    def has_cls(self) -> bool:
        return self.model.config.vision_feature_select_strategy == "default"

    @property
    def side(self) -> int:
        vc = self.model.config.vision_config
        return vc.image_size // vc.patch_size

    # ------------------------------------------------------------------ geometry

    def layout_for_size(self, image_size_hw) -> AnyResLayout:
        """The layout of an image of ``image_size_hw`` (height, width) — the host's own rules."""
        host, cfg, side = _host_module(self.model), self.model.config, self.side
        size = [int(x) for x in image_size_hw]
        grid_h, grid_w = host.get_anyres_image_grid_shape(size, cfg.image_grid_pinpoints, cfg.vision_config.image_size)
        top, bottom, left, right = unpad_bounds(host.unpad_image, size, grid_h * side, grid_w * side)
        return AnyResLayout(grid_w, grid_h, side, top, bottom, left, right)

    def image_layouts(self, inputs: dict[str, Any]) -> list[AnyResLayout]:
        sizes = inputs.get("image_sizes")
        if sizes is None:
            raise ValueError(f"{self.family} needs the processor's image_sizes")
        sizes = sizes.tolist() if isinstance(sizes, torch.Tensor) else [list(s) for s in sizes]
        return [self.layout_for_size(s) for s in sizes]

    def processed_layout(self, image_inputs: dict[str, Any], index: int, processor: Any) -> AnyResLayout:
        """The layout of image ``index`` of an image processor's output (for placeholder sizing)."""
        return self.layout_for_size(_as_list(image_inputs["image_sizes"][index]))

    def view_pixels(self, pixel_values: torch.Tensor | list, layouts: list[AnyResLayout]) -> torch.Tensor:
        """All views ``[ΣV_i, 3, S, S]`` (the processor pads each image to the largest view count)."""
        counts = [lay.n_views for lay in layouts]
        if isinstance(pixel_values, (list, tuple)) or pixel_values.dim() == 5:
            if len(pixel_values) != len(layouts):
                raise ValueError(f"{len(pixel_values)} images in pixel_values but {len(layouts)} image sizes")
            return torch.cat([pv[:n] for pv, n in zip(pixel_values, counts)])
        if pixel_values.dim() != 4 or pixel_values.shape[0] != sum(counts):
            raise ValueError(f"pixel_values of shape {tuple(pixel_values.shape)} do not hold the {sum(counts)} views "
                             "the image sizes call for")
        return pixel_values

    # ------------------------------------------------------------------ vision

    def vision(self, pixels: torch.Tensor, request: ScoreRequest | None, inputs: dict[str, Any]):
        """Views → selected patch features ``[V, N, C]`` (before the projector) and, when
        ``request`` is given, scores ``[V, N]`` float32 from the same forward (a
        :class:`~llava.compression.scoring.TowerScores` when it asks for keys or extra layers)."""
        tower = self.inner.vision_tower
        dtype = next(tower.parameters()).dtype
        out = tower(pixels.to(device=execution_device(tower), dtype=dtype), output_hidden_states=True, return_dict=True)
        hidden = out.hidden_states
        layer = self._option(inputs, "vision_feature_layer")
        feats = hidden[layer] if isinstance(layer, int) else torch.cat([hidden[i] for i in layer], dim=-1)
        prefix = 1 if self._option(inputs, "vision_feature_select_strategy") == "default" else 0
        feats = feats[:, prefix:]
        if request is None:
            return feats, None
        if request.kind == "neg_cos":
            return feats, neg_cos_scores(feats)
        layers = encoder_layers(tower)
        with onloaded(tower):  # the scorers read layer weights outside the layers' forward
            if wants_tower_scores(request):
                return feats, tower_scores(layers, hidden.__getitem__, request)
            index = request_layers(request, len(layers))[0]
            if request.kind == "attn_received":
                return feats, layer_received_attention(layers[index], hidden[index])[:, prefix:]
            return feats, cls_attention_scores(layers[index], hidden[index], request.kind)

    # ------------------------------------------------------------------ compression

    def encode_images(self, comp: Compressor, inputs: dict[str, Any]) -> list[CompressedImage]:
        layouts = self.image_layouts(inputs)
        pixels = self.view_pixels(inputs["pixel_values"], layouts)
        feats, scores = self.vision(pixels, self.score_request(comp), inputs)
        counts = [lay.n_views for lay in layouts]
        feats = feats.split(counts)
        scores = scores.split(counts) if scores is not None else [None] * len(layouts)
        projector = self.inner.multi_modal_projector
        with self.image_newline() as newline:
            return [comp.compress(f, newline, lay, s, project=projector) for f, lay, s in zip(feats, layouts, scores)]

    @contextlib.contextmanager
    def image_newline(self) -> Iterator[torch.Tensor]:
        """The host's ``image_newline``, loaded for the block even when a ``device_map``
        offloaded it (it is read outside any module's forward)."""
        with onloaded(self.inner, recurse=False):
            yield self.inner.image_newline
