"""The CLIP vision tower of LLaVA: a transformers ``CLIPVisionModel`` run up to the feature
layer LLaVA selects, optionally handing the input of one layer to a scoring callback.

The layer loop is ours (instead of ``output_hidden_states=True``) so that layers past the
selected one never run, and so that [CLS] scores can be taken from any layer's input without
materialising attention maps: the tower keeps whatever attention kernel the config asks for
(SDPA by default, FlashAttention-2, eager).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.utils import execution_device, onloaded

# A scorer receives (layer index, hidden state entering that layer [V, 1+N, C]) and returns
# whatever the caller wants back (typically per-patch scores [V, N]); it may read that layer's
# weights (they are on the execution device during the call, even when offloaded). A tuple of
# layers taps each.
LayerTap = tuple[int | tuple[int, ...], Callable[[int, torch.Tensor], torch.Tensor]]


class CLIPVisionTower(nn.Module):
    """Wraps ``CLIPVisionModel`` as ``self.vision_tower`` (the original checkpoints' layout).

    ``select_layer`` indexes hidden states like transformers does (0 = embeddings after
    ``pre_layrnorm``, ``i`` = after layer ``i``; negative from the end); ``select_feature``
    is ``"patch"`` (drop [CLS]) or ``"cls_patch"``.
    """

    def __init__(self, vision_config: CLIPVisionConfig, select_layer: int = -2, select_feature: str = "patch"):
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"mm_vision_select_feature must be 'patch' or 'cls_patch', got {select_feature!r}")
        self.vision_tower = CLIPVisionModel(vision_config)
        self.select_layer = select_layer
        self.select_feature = select_feature
        self.is_loaded = True

    # -- properties the original tree exposes
    @property
    def config(self) -> CLIPVisionConfig:
        return self.vision_tower.config

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_patches_per_side(self) -> int:
        return self.config.image_size // self.config.patch_size

    @property
    def num_patches(self) -> int:
        return self.num_patches_per_side**2

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.embeddings.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        """Where the tower computes (also when a ``device_map`` offloaded its weights)."""
        return execution_device(self.vision_tower.embeddings.patch_embedding)

    def layer_index(self, layer: int) -> int:
        """Normalise a (possibly negative) encoder-layer index to ``0 … num_layers-1``."""
        idx = layer + self.num_layers if layer < 0 else layer
        if not 0 <= idx < self.num_layers:
            raise ValueError(
                f"vision layer {layer} out of range for a {self.num_layers}-layer tower "
                f"(valid: {-self.num_layers} … {self.num_layers - 1})"
            )
        return idx

    def _feature_depth(self) -> int:
        """How many encoder layers produce the selected hidden state."""
        depth = self.select_layer + self.num_layers + 1 if self.select_layer < 0 else self.select_layer
        if not 0 <= depth <= self.num_layers:
            raise ValueError(f"mm_vision_select_layer {self.select_layer} out of range")
        return depth

    def check_tap_layer(self, layer: int) -> int:
        """The encoder layer whose input a scorer may read (``0 … depth``), normalised; a
        layer the tower does not have, or one past the feature layer, is a ``ValueError``."""
        idx = self.layer_index(layer)
        depth = self._feature_depth()
        if idx > depth:
            raise ValueError(
                f"scoring layer {layer} lies past the feature layer (select_layer={self.select_layer}); "
                "its input is not computed"
            )
        return idx

    def forward(self, images: torch.Tensor, tap: LayerTap | None = None):
        """Encode ``images`` ``[V, 3, S, S]`` → features ``[V, N, C]`` (N = 576 for 336/14).

        With ``tap = (layer, fn)``, ``fn(layer, h)`` is called on the hidden state ``h``
        ``[V, 1+N, C]`` entering encoder layer ``layer`` and ``(features, fn(...))`` is
        returned. If that layer lies beyond the selected one it is not run — its input is
        already at hand. With a tuple of layers, ``fn`` is called at each and the second item
        is a dict ``{normalised layer: fn(...)}``.
        """
        if isinstance(images, list):
            feats = [self.forward(im.unsqueeze(0), tap) for im in images]
            if tap is None:
                return torch.cat(feats, 0)
            return torch.cat([f for f, _ in feats], 0), _cat([s for _, s in feats])
        model = self.vision_tower
        hidden = model.pre_layrnorm(model.embeddings(images.to(device=self.device, dtype=self.dtype)))
        depth = self._feature_depth()
        many = tap is not None and isinstance(tap[0], tuple)
        wanted = [] if tap is None else [self.check_tap_layer(x) for x in (tap[0] if many else (tap[0],))]
        tapped = {}
        for i, layer in enumerate(model.encoder.layers[:depth]):
            if i in wanted:
                with onloaded(layer):  # the scorer reads this layer's weights
                    tapped[i] = tap[1](i, hidden)
            out = layer(hidden, None)
            hidden = out[0] if isinstance(out, tuple) else out
        if depth in wanted:
            with onloaded(model.encoder.layers[depth]):
                tapped[depth] = tap[1](depth, hidden)
        feats = hidden[:, 1:] if self.select_feature == "patch" else hidden
        if tap is None:
            return feats
        return feats, (tapped if many else tapped[wanted[0]])


def _cat(parts: list):
    """Concatenate per-image tap results along the view dimension, whatever their nesting
    (a tensor, a tuple of tensors or ``None``s, a dict of those)."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, dict):
        return {k: _cat([p[k] for p in parts]) for k in first}
    if isinstance(first, tuple):
        return tuple(_cat(list(p)) for p in zip(*parts))
    return torch.cat(parts, 0)
