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
from llava.model.pruned_stack import image_ids_from_runs

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
    families (LLaVA-NeXT, OneVision) — for the vision-stage peers, ``newlines="all"`` or
    ``"none"`` —; Qwen's single views always are.
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
            f"(the vision-stage peers: newlines='all' or 'none'; got {comp.to_dict()})"
        )
    proc_token = getattr(processor, "image_token_id", None)
    if proc_token is not None and int(proc_token) != adapter.image_token_id:
        raise ValueError(f"processor image token id {proc_token} ≠ the model's {adapter.image_token_id}")
    state = _Installation(comp, adapter, processor)
    state.wrap(processor, "replace_image_token", _Wrapper(state.replace_image_token))
    inner = adapter.inner
    original = inner.get_image_features
    state.wrap(inner, "get_image_features", _Wrapper(functools.partial(state.get_image_features, original), original))
    if _has_videos(adapter, processor):
        state.wrap(processor, "replace_video_token", _Wrapper(state.replace_video_token))
        original = inner.get_video_features
        state.wrap(inner, "get_video_features", _Wrapper(functools.partial(state.get_video_features, original), original))
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


def _has_videos(adapter: Adapter, processor: Any) -> bool:
    """Whether the family compresses videos and the processor emits video placeholders."""
    return type(adapter).video_layouts is not Adapter.video_layouts and hasattr(processor, "replace_video_token")


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
    #: per modality, the last encoded batch: (pixels, their version, grid/sizes key, records)
    last: dict[str, tuple] = field(default_factory=dict)

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
        self.last = {}

    # ------------------------------------------------------------------ processor side

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        layout = self.adapter.processed_layout(image_inputs, image_idx, self.processor)
        return self.processor.image_token * self.comp.token_count(layout)

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        layout = self.adapter.processed_video_layout(video_inputs, video_idx, self.processor)
        count = self.comp.token_count(layout)
        if count is None:
            raise ValueError(
                f"llava.hf.install: {self.comp.name}'s kept count of a video depends on its content; build the "
                "compressor with budget='exact' so that video placeholders can be sized from the shape alone"
            )
        return self.processor.video_token * count

    # ------------------------------------------------------------------ model side

    def encode(self, inputs: dict[str, Any], modality: str = "image") -> list[CompressedImage]:
        """Encode (or reuse the last encoding of the very same pixels) and check every image or
        video packs the count the processor promised."""
        pixels = inputs[_PIXELS[modality]]
        key = _batch_key(inputs, modality)
        last = self.last.get(modality)
        if last is not None and last[0] is pixels and last[1] == pixels._version and last[2] == key:
            return last[3]
        encoder = self.adapter.encode_images if modality == "image" else self.adapter.encode_videos
        records = encoder(self.comp, inputs)
        for i, rec in enumerate(records):
            promised = self.comp.token_count(rec.layout)
            if promised is not None and rec.index.shape[0] != promised:
                raise RuntimeError(f"{modality} {i} packed {rec.index.shape[0]} tokens, the processor emitted {promised}")
        self.last[modality] = (pixels, pixels._version, key, records)
        return records

    def _features(self, modality: str, original, args, kwargs) -> BaseModelOutputWithPooling:
        records = self.encode(_bound(original, args, kwargs), modality)
        return self.adapter.encoder_output(modality, records)

    def get_image_features(self, original, *args, **kwargs) -> BaseModelOutputWithPooling:
        return self._features("image", original, args, kwargs)

    def get_video_features(self, original, *args, **kwargs) -> BaseModelOutputWithPooling:
        return self._features("video", original, args, kwargs)

    def get_rope_index(self, original, *args, **kwargs):
        inputs = _bound(original, args, kwargs)
        records = {}
        for modality, grid in (("image", "image_grid_thw"), ("video", "video_grid_thw")):
            if inputs.get(grid) is None:
                continue
            last = self.last.get(modality)
            if inputs.get(_PIXELS[modality]) is not None:
                records[modality] = self.encode(inputs, modality)
            elif last is not None and last[2] == _batch_key(inputs, modality):
                records[modality] = last[3]
            else:
                raise RuntimeError(f"llava.hf: M-RoPE positions of compressed {modality}s need their pixels; "
                                   f"call the model with {_PIXELS[modality]} (or encode them first)")
        if not records:
            return original(*args, **kwargs)
        grids = {k: inputs.get(k) for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")}
        return compressed_rope_index(self.adapter, inputs["input_ids"], inputs.get("attention_mask"), records, grids)


_PIXELS = {"image": "pixel_values", "video": "pixel_values_videos"}


def _bound(original, args, kwargs) -> dict[str, Any]:
    """The call's arguments by name (``**kwargs`` flattened in)."""
    inputs = dict(inspect.signature(original).bind(*args, **kwargs).arguments)
    inputs.update(inputs.pop("kwargs", {}))
    return inputs


def _batch_key(inputs: dict[str, Any], modality: str = "image") -> tuple:
    names = ("image_grid_thw", "image_sizes") if modality == "image" else ("video_grid_thw",)
    for name in names:
        value = inputs.get(name)
        if value is not None:
            return name, tuple(map(tuple, value.tolist() if isinstance(value, torch.Tensor) else value))
    if modality == "video" and inputs.get("pixel_values_videos") is not None:
        return "pixel_values_videos", tuple(inputs["pixel_values_videos"].shape)
    return ()


def compressed_rope_index(
    adapter: Qwen2VLAdapter,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    records: dict[str, list[CompressedImage]],
    grids: dict[str, torch.Tensor | None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE positions ``[3, B, L]`` and deltas ``[B, 1]`` of a prompt whose image and video
    runs are already compressed (``records[modality][i]`` kept ``len(index)`` tokens): the
    prompt is expanded back to full length, numbered by the host's ``get_rope_index`` (with
    ``grids``: ``image_grid_thw``, ``video_grid_thw``, ``second_per_grid_ts``), and each token
    reads its column."""
    tokens = {adapter.token_id(m): recs for m, recs in records.items() if recs}
    runs = {}
    for token, recs in tokens.items():
        runs[token] = []
        for rec in recs:
            r = torch.zeros(rec.index.shape[0], dtype=torch.long, device=input_ids.device)
            r[0] = rec.layout.num_tokens()
            runs[token].append(r)
    full = splice(input_ids, attention_mask, runs)  # full-length prompt, left-padded
    positions = adapter.full_positions(  # [3, B, W]
        full.input_ids, full.attention_mask, None, grids.get("image_grid_thw"),
        video_grid_thw=grids.get("video_grid_thw"), second_per_grid_ts=grids.get("second_per_grid_ts"),
    )
    B, L = input_ids.shape
    W = full.source.shape[1]
    # first full column fed by each compressed position
    src = full.source
    cols = torch.arange(W, device=src.device).expand_as(src)
    first = torch.full((B, L), W, dtype=torch.long, device=src.device)
    first.scatter_reduce_(1, src.clamp_min(0), cols.masked_fill(src < 0, W), reduce="amin")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    pos_in_row = torch.arange(L, device=input_ids.device).expand(B, L)
    col = first.clamp_max(W - 1)  # text: its own column
    for token, recs in tokens.items():
        is_tok = (input_ids == token) & mask
        rank = is_tok.reshape(-1).long().cumsum(0).reshape(B, L) - 1  # index among this modality's tokens
        kept = torch.cat([rec.kept for rec in recs]).to(input_ids.device)
        counts = [rec.index.shape[0] for rec in recs]
        sizes = torch.tensor(counts, device=input_ids.device)
        ends = sizes.cumsum(0)
        run = image_ids_from_runs(is_tok, counts).clamp_min(0)  # the record each token belongs to
        run_start = (pos_in_row - (rank - (ends - sizes)[run])).clamp_min(0)
        col = torch.where(is_tok, first.gather(1, run_start) + kept[rank.clamp_min(0)], col)
    out = positions.gather(2, col.expand(3, B, L)).masked_fill(~mask, 0)
    deltas = out.amax(dim=(0, 2)) + 1 - mask.long().sum(1)
    return out, deltas[:, None]
