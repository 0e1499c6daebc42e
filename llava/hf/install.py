"""``install`` / ``uninstall``: the stock ``model.generate(**processor(images=..., text=...))``
(and ``model(**inputs)``) running compressed, for fixed-count compressors.

With ``budget="exact"`` a compressor's packed length is a function of the image size and R
(:meth:`~llava.compression.Compressor.token_count`), so the processor can size every image's
placeholder run before the vision tower runs — as serving engines need. ``install`` puts
reversible wrappers on the two *instances* (nothing on their classes):

- ``processor.replace_image_token``: emits the compressed count instead of the full one;
- ``model.model.get_image_features``: returns the compressed tokens (``generate`` calls it
  before prefill, ``forward`` when given pixels), checking each count against the promise;
- Qwen2-VL / Qwen2.5-VL also ``model.model.get_rope_index``: the survivors' full-grid M-RoPE
  positions, computed by the host's own ``get_rope_index`` on the prompt expanded back to
  full length. ``generate`` numbers positions *before* it encodes the images, so whichever of
  the two runs first encodes, and the other reuses that result (same ``pixel_values`` tensor).

``uninstall`` restores whatever the instances held before. Uninstall before saving or
deep-copying the processor.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from llava.compression import AnyResLayout, CompressedImage, Compressor, NoCompression
from llava.compression.in_llm import llm_stage

from .core import Adapter, adapter_for, splice
from .qwen2_vl import Qwen2VLAdapter

_STATE = "_llava_hf_installation"
_MISSING = object()


def installed(model: nn.Module) -> Compressor | None:
    """The compressor installed on ``model`` (``None`` if none)."""
    state = getattr(model, _STATE, None)
    return None if state is None else state.comp


def install(model: nn.Module, processor: Any, comp: Compressor) -> None:
    """Make ``model`` and ``processor`` run ``comp`` through their stock entry points.

    ``comp`` must pack a count fixed by the image size: ``budget="exact"`` for the AnyRes
    families (LLaVA-NeXT, OneVision); Qwen's single views always are.
    """
    adapter = adapter_for(model)
    if getattr(model, _STATE, None) is not None:
        raise RuntimeError("llava.hf is already installed on this model; call llava.hf.uninstall(model, processor) first")
    if comp is None or isinstance(comp, NoCompression):
        raise ValueError("nothing to install: comp is None/none (the unpatched model is what you have)")
    if llm_stage(comp) is not None:
        raise ValueError(f"{comp.name} prunes inside the LLM, which the stock generate cannot run; "
                         "use llava.hf.generate (or llava.hf.llm_pruning) instead of install")
    adapter.check(comp)
    probe = AnyResLayout(2, 2, 4, 0, 8, 0, 8)  # any multi-view image
    if not isinstance(adapter, Qwen2VLAdapter) and comp.token_count(probe) is None:
        raise ValueError(
            f"install needs a token count fixed by the image size; build the compressor with budget='exact' "
            f"(got {comp.to_dict()})"
        )
    proc_token = getattr(processor, "image_token_id", None)
    if proc_token is not None and int(proc_token) != adapter.image_token_id:
        raise ValueError(f"processor image token id {proc_token} ≠ the model's {adapter.image_token_id}")
    state = _Installation(comp, adapter, processor)
    state.wrap(processor, "replace_image_token", _Wrapper(state.replace_image_token))
    inner = adapter.inner
    original = inner.get_image_features
    state.wrap(inner, "get_image_features", _Wrapper(functools.partial(state.get_image_features, original), original))
    if isinstance(adapter, Qwen2VLAdapter):
        original = inner.get_rope_index
        state.wrap(inner, "get_rope_index", _Wrapper(functools.partial(state.get_rope_index, original), original))
    setattr(model, _STATE, state)
    setattr(processor, _STATE, state)


def uninstall(model: nn.Module, processor: Any) -> None:
    """Undo :func:`install`: restore what the model and the processor held before."""
    state = getattr(model, _STATE, None)
    if state is None:
        raise RuntimeError("llava.hf is not installed on this model")
    if getattr(processor, _STATE, None) is not state:
        raise RuntimeError("this processor was not installed together with this model")
    state.restore()
    delattr(model, _STATE)
    delattr(processor, _STATE)


class _Wrapper:
    """A callable put on an instance; copies (``to_dict``, ``deepcopy``) share it instead of
    cloning the model it refers to. ``inspect.signature`` sees the wrapped method's."""

    def __init__(self, fn, wrapped=None):
        self.fn = fn
        if wrapped is not None:
            self.__wrapped__ = wrapped
            self.__signature__ = inspect.signature(wrapped)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __deepcopy__(self, memo):
        return self


@dataclass
class _Installation:
    comp: Compressor
    adapter: Adapter
    processor: Any
    saved: list[tuple[Any, str, Any]] = field(default_factory=list)
    #: the last encoded batch: (pixel_values, its version, grid/sizes key, records)
    last: tuple | None = None

    # ------------------------------------------------------------------ bookkeeping

    def wrap(self, obj: Any, name: str, fn: Any) -> None:
        self.saved.append((obj, name, obj.__dict__.get(name, _MISSING)))
        setattr(obj, name, fn)

    def restore(self) -> None:
        for obj, name, previous in reversed(self.saved):
            if previous is _MISSING:
                obj.__dict__.pop(name, None)
            else:
                setattr(obj, name, previous)
        self.last = None

    # ------------------------------------------------------------------ processor side

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        layout = self.adapter.processed_layout(image_inputs, image_idx, self.processor)
        return self.processor.image_token * self.comp.token_count(layout)

    # ------------------------------------------------------------------ model side

    def encode(self, inputs: dict[str, Any]) -> list[CompressedImage]:
        """Encode (or reuse the last encoding of the very same pixels) and check every image
        packs the count the processor promised."""
        pixels = inputs["pixel_values"]
        key = _batch_key(inputs)
        if self.last is not None and self.last[0] is pixels and self.last[1] == pixels._version and self.last[2] == key:
            return self.last[3]
        records = self.adapter.encode_images(self.comp, inputs)
        for i, rec in enumerate(records):
            promised = self.comp.token_count(rec.layout)
            if promised is not None and rec.index.shape[0] != promised:
                raise RuntimeError(f"image {i} packed {rec.index.shape[0]} tokens, the processor emitted {promised}")
        self.last = (pixels, pixels._version, key, records)
        return records

    def get_image_features(self, original, *args, **kwargs) -> BaseModelOutputWithPooling:
        bound = inspect.signature(original).bind(*args, **kwargs)
        inputs = dict(bound.arguments)
        inputs.update(inputs.pop("kwargs", {}))
        records = self.encode(inputs)
        return BaseModelOutputWithPooling(pooler_output=tuple(r.tokens for r in records))

    def get_rope_index(self, original, *args, **kwargs):
        bound = inspect.signature(original).bind(*args, **kwargs)
        inputs = dict(bound.arguments)
        inputs.update(inputs.pop("kwargs", {}))
        grid = inputs.get("image_grid_thw")
        if grid is None or inputs.get("video_grid_thw") is not None:
            return original(*args, **kwargs)
        if inputs.get("pixel_values") is not None:
            records = self.encode(inputs)
        elif self.last is not None and self.last[2] == _batch_key(inputs):
            records = self.last[3]
        else:
            raise RuntimeError("llava.hf: M-RoPE positions of compressed images need their pixels; "
                               "call the model with pixel_values (or encode the images first)")
        return compressed_rope_index(self.adapter, inputs["input_ids"], inputs.get("attention_mask"), grid, records)


def _batch_key(inputs: dict[str, Any]) -> tuple:
    for name in ("image_grid_thw", "image_sizes"):
        value = inputs.get(name)
        if value is not None:
            return name, tuple(map(tuple, value.tolist() if isinstance(value, torch.Tensor) else value))
    return ()


def compressed_rope_index(
    adapter: Qwen2VLAdapter,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    grid: torch.Tensor,
    records: list[CompressedImage],
) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE positions ``[3, B, L]`` and deltas ``[B, 1]`` of a prompt whose image runs are
    already compressed (``records[i]`` kept ``len(runs)`` tokens): the prompt is expanded back to
    full length, numbered by the host's ``get_rope_index``, and each token reads its column."""
    token = adapter.image_token_id
    runs = []
    for rec in records:
        r = torch.zeros(rec.index.shape[0], dtype=torch.long, device=input_ids.device)
        r[0] = rec.layout.num_tokens()
        runs.append(r)
    full = splice(input_ids, attention_mask, {token: runs})  # full-length prompt, left-padded
    positions = adapter.full_positions(full.input_ids, full.attention_mask, None, grid)  # [3, B, W]
    B, L = input_ids.shape
    # first full column fed by each compressed position
    src = full.source
    cols = torch.arange(src.shape[1], device=src.device).expand_as(src)
    first = torch.full((B, L), src.shape[1], dtype=torch.long, device=src.device)
    first.scatter_reduce_(1, src.clamp_min(0), cols.masked_fill(src < 0, src.shape[1]), reduce="amin")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    is_img = (input_ids == token) & mask
    rank = is_img.reshape(-1).long().cumsum(0).reshape(B, L) - 1  # global index among image tokens
    kept = torch.cat([rec.kept for rec in records]).to(input_ids.device)
    ends = torch.tensor([rec.index.shape[0] for rec in records], device=input_ids.device).cumsum(0)
    offset = rank - (ends - ends.new_tensor([rec.index.shape[0] for rec in records]))[
        torch.searchsorted(ends, rank.clamp_min(0), right=True).clamp_max(len(records) - 1)
    ]
    pos_in_row = torch.arange(L, device=input_ids.device).expand(B, L)
    run_start = (pos_in_row - offset).clamp_min(0)
    col = torch.where(is_img, first.gather(1, run_start) + kept[rank.clamp_min(0)], first.clamp_max(src.shape[1] - 1))
    out = positions.gather(2, col.expand(3, B, L)).masked_fill(~mask, 0)
    deltas = out.amax(dim=(0, 2)) + 1 - mask.long().sum(1)
    return out, deltas[:, None]
