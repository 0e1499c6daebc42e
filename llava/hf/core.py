"""The family-independent half of :mod:`llava.hf`: the adapter registry, the score policy, the
splice of compressed image runs into the prompt, and the two entry points.

A family adapter (one module per model family) knows its host's internals — where the vision
tower and projector are, the host's own geometry helpers, how positions are numbered — and
turns processor outputs into one :class:`~llava.compression.CompressedImage` per image. The
core then rewrites the prompt so that every image's placeholder run holds exactly the tokens
that survive, and hands the model the tokens through transformers' public
``mm_encoder_outputs`` argument: no transformers class is patched or subclassed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from llava.compression import (
    AnyResLayout,
    CompressedImage,
    Compressor,
    NoCompression,
    ScoreRequest,
    Selection,
    VideoLayout,
)
from llava.compression import functional as Fn
from llava.compression import video as Vd
from llava.compression.cli import compression_config
from llava.compression.in_llm import llm_stage
from llava.compression.records import video_selection
from llava.compression.scoring import CLS_KINDS, wants_tower_scores
from llava.model import pruned_stack

# ----------------------------------------------------------------------------- registry

_ADAPTERS: dict[str, type[Adapter]] = {}


def register(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make ``cls`` the adapter of the model classes it names."""
    for name in cls.class_names:
        _ADAPTERS[name] = cls
    return cls


def supported_classes() -> list[str]:
    return list(_ADAPTERS)


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of ``model``'s family; anything else is an error naming the supported classes."""
    for klass in type(model).__mro__:
        if klass.__name__ in _ADAPTERS:
            return _ADAPTERS[klass.__name__](model)
    raise TypeError(
        f"llava.hf supports {', '.join(_ADAPTERS)}; got {type(model).__name__}"
        + (" (our own LLaVA tree: set model.compressor instead)" if hasattr(model, "compressor") else "")
    )


# ----------------------------------------------------------------------------- adapters


class Adapter:
    """What :func:`prepare_inputs` needs from a model family. Subclasses set the class
    attributes and implement :meth:`image_layouts`, :meth:`processed_layout` and
    :meth:`encode_images`; :meth:`encode` is the per-modality entry (a family that compresses
    videos adds them there, with their own placeholder token and encoder output)."""

    #: transformers class names served by this adapter
    class_names: ClassVar[tuple[str, ...]] = ()
    #: processor / forward keys the adapter consumes (replaced by ``mm_encoder_outputs``)
    consumed: ClassVar[tuple[str, ...]] = ("pixel_values",)
    #: compressor layouts the family supports (``reference`` is LLaVA-NeXT's release)
    layouts: ClassVar[tuple[str, ...]] = ("faithful",)

    def __init__(self, model: nn.Module):
        self.model = model
        self.inner = model.model  # the base model (vision tower, projector, language model)

    # -- to implement
    @property
    def has_cls(self) -> bool:
        """Whether the vision tower has a [CLS] token the [CLS] score kinds can read."""
        raise NotImplementedError

    @property
    def image_token_id(self) -> int:
        return self.token_id("image")

    def token_id(self, modality: str) -> int:
        """The placeholder token of ``modality`` (``image``, ``video``) in this model's prompts."""
        return int(getattr(self.model.config, f"{modality}_token_id"))

    def encode(self, comp: Compressor, inputs: dict[str, Any]) -> dict[str, list[CompressedImage]]:
        """Every compressed modality of the batch → its records, in prompt order (images,
        then videos: one record per video)."""
        out = {}
        for modality, pixels, layouts, encoder in (
            ("image", "pixel_values", self.image_layouts, self.encode_images),
            ("video", "pixel_values_videos", self.video_layouts, self.encode_videos),
        ):
            if inputs.get(pixels) is None:
                continue
            for lay in layouts(inputs):
                comp.check_geometry(lay.tokens_per_view)
            out[modality] = encoder(comp, inputs)
        return out

    def encoder_output(self, modality: str, records: list[CompressedImage]) -> BaseModelOutputWithPooling:
        """The ``mm_encoder_outputs[modality]`` entry the host's forward consumes."""
        return BaseModelOutputWithPooling(pooler_output=tuple(r.tokens for r in records))

    def image_layouts(self, inputs: dict[str, Any]) -> list[AnyResLayout]:
        """The uncompressed geometry of every image of the batch, in prompt order (host-side)."""
        raise NotImplementedError

    def encode_images(self, comp: Compressor, inputs: dict[str, Any]) -> list[CompressedImage]:
        """Vision tower → scores → ``comp`` → one record (with ``tokens`` ``[T_i, D]``) per image."""
        raise NotImplementedError

    def video_layouts(self, inputs: dict[str, Any]) -> list[VideoLayout]:
        """The uncompressed geometry of every video of the batch, in prompt order (host-side)."""
        raise NotImplementedError(f"llava.hf does not compress {self.family} videos")

    def encode_videos(self, comp: Compressor, inputs: dict[str, Any]) -> list[CompressedImage]:
        """Vision tower → the frames' LLM tokens ``[F, N, D]`` and scores → ``comp`` → one
        record per video."""
        raise NotImplementedError(f"llava.hf does not compress {self.family} videos")

    def processed_video_layout(self, video_inputs: dict[str, Any], index: int, processor: Any) -> VideoLayout:
        """The layout of video ``index`` of a video processor's output (to size placeholders)."""
        raise NotImplementedError(f"llava.hf does not compress {self.family} videos")

    def add_positions(self, kwargs: dict[str, Any], inputs: dict[str, Any], spliced: Spliced) -> None:
        """Put the compressed prompt's position ids into ``kwargs`` (default: from the mask,
        as ``generate`` numbers them, so a left-padded batch matches its single rows)."""
        kwargs["position_ids"] = text_positions(spliced.attention_mask)

    # -- shared helpers
    @property
    def language_model(self) -> nn.Module:
        """The decoder stack (embeddings, layers, norm, rotary embedding) the in-LLM methods run."""
        return self.inner.language_model

    @property
    def family(self) -> str:
        return type(self.model).__name__

    def check(self, comp: Compressor) -> None:
        if comp.layout not in self.layouts:
            raise ValueError(
                f"layout={comp.layout!r} is not available for {self.family} (valid: {', '.join(self.layouts)}); "
                "'reference' reproduces the LLaVA-NeXT release's packing"
            )

    def score_request(self, comp: Compressor) -> ScoreRequest | None:
        """The score ``comp`` asks for, made concrete for this tower: on a tower without [CLS]
        a method's *default* [CLS] score becomes ``neg_cos`` (the paper's CLS-free score); a
        [CLS] score asked for explicitly is an error."""
        req = comp.score_request()
        if req is None or self.has_cls or req.kind not in CLS_KINDS:
            return req
        if wants_tower_scores(req):
            raise ValueError(
                f"{comp.name} reads the [CLS] attention and keys of a CLIP-style vision tower; {self.family}'s "
                "vision tower has no [CLS] token"
            )
        default = next((f.default for f in dataclasses.fields(comp) if f.name == "score"), None)
        if getattr(comp, "score", None) == default:
            return ScoreRequest("neg_cos", req.layer)
        raise ValueError(
            f"{self.family}'s vision tower has no [CLS] token, so score={req.kind!r} cannot be computed; "
            "use score='neg_cos' (the default there) or score='attn_received'"
        )

    def processed_layout(self, image_inputs: dict[str, Any], index: int, processor: Any) -> AnyResLayout:
        """The layout of image ``index`` of an image processor's output (to size placeholders)."""
        raise NotImplementedError

    def uncompressed_records(self, inputs: dict[str, Any]) -> list[CompressedImage]:
        """Records of the unpatched model (everything kept), from the geometry alone: images,
        then videos."""
        device = inputs["input_ids"].device
        layouts = self.image_layouts(inputs) if inputs.get("pixel_values") is not None else []
        if inputs.get("pixel_values_videos") is not None:
            layouts = layouts + self.video_layouts(inputs)
        return [geometry_record(lay, device) for lay in layouts]


def geometry_record(layout: AnyResLayout | VideoLayout, device: torch.device | str = "cpu") -> CompressedImage:
    """The keep-all record of ``layout`` (no features needed)."""
    if isinstance(layout, VideoLayout):
        keep = Vd.keep_all_frames(layout, device)
        plan = Vd.pack_video(layout, keep)
        return CompressedImage(None, plan.index, video_selection(keep), layout, plan.kept)
    thumb, crops = Fn.keep_all(layout, device)
    plan = Fn.pack_plan(layout, thumb, crops)
    return CompressedImage(None, plan.index, Selection(thumb, crops), layout, plan.kept)


# ----------------------------------------------------------------------------- splicing


@dataclass
class Spliced:
    """The compressed prompt: ``input_ids`` / ``attention_mask`` ``[B, L']`` (left-padded) and
    ``source`` ``[B, L']``, the position in the original row each token comes from (-1 = pad)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    source: torch.Tensor

    def take(self, full: torch.Tensor, fill: int = 0) -> torch.Tensor:
        """A per-token tensor of the original prompt ``[..., B, L]`` → ``[..., B, L']``."""
        src = self.source.to(full.device)
        idx = src.clamp_min(0).expand(*full.shape[:-2], *src.shape)
        return full.gather(-1, idx).masked_fill(src < 0, fill)


def run_counts(record: CompressedImage) -> torch.Tensor:
    """How many tokens each position of the image's uncompressed run becomes: 1 where a
    token survives (``kept``), else 0; for the reference layout (not a subsequence) the whole
    packed sequence stands at the run's first position."""
    n = record.layout.num_tokens()
    counts = torch.zeros(n, dtype=torch.long, device=record.index.device)
    if record.kept is not None:
        return counts.index_fill_(0, record.kept, 1)
    counts[0] = record.index.shape[0]
    return counts


def splice(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    runs: dict[int, list[torch.Tensor]],
    pad_id: int = 0,
    hint: str = "",
    names: dict[int, str] | None = None,
) -> Spliced:
    """Rewrite a batch so that the ``i``-th placeholder run of token ``t`` (in row-major order,
    ``len(runs[t][i])`` tokens) becomes ``runs[t][i]`` repeats per position. ``names`` names
    each token's modality in errors (default ``image``).

    Vectorised (one ``repeat_interleave``); host syncs: the placeholder count check and the
    new lengths. The result is left-padded with ``pad_id``.
    """
    B, L = input_ids.shape
    device = input_ids.device
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    counts = mask.long()
    for token_id, token_runs in runs.items():
        is_tok = (input_ids == token_id) & mask
        expected = [int(r.numel()) for r in token_runs]
        found = int(is_tok.sum())
        if found != sum(expected):
            what = (names or {}).get(token_id, "image")
            raise ValueError(
                f"the prompt(s) hold {found} placeholder tokens (id {token_id}) but the {len(token_runs)} "
                f"{what}(s) call for {sum(expected)} (per {what}: {expected}){hint}"
            )
        if token_runs:
            counts[is_tok] = torch.cat(token_runs).to(device)
    lengths = counts.sum(1)
    lens = lengths.tolist()
    total, width = sum(lens), max(lens)
    src = torch.repeat_interleave(torch.arange(B * L, device=device), counts.reshape(-1), output_size=total)
    row = src // L
    start = lengths.cumsum(0) - lengths
    col = (width - lengths)[row] + torch.arange(total, device=device) - start[row]
    source = torch.full((B, width), -1, dtype=torch.long, device=device)
    source[row, col] = src % L
    out_mask = source >= 0
    ids = input_ids.gather(1, source.clamp_min(0)).masked_fill(~out_mask, pad_id)
    mask_dtype = attention_mask.dtype if attention_mask is not None else torch.long
    return Spliced(ids, out_mask.to(mask_dtype), source)


def text_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` positions counted over the unmasked tokens (0 on padding), as ``generate`` does."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def _pad_id(model: nn.Module) -> int:
    pad = getattr(getattr(model, "generation_config", None), "pad_token_id", None)
    if pad is None:
        pad = getattr(model.config.get_text_config(), "pad_token_id", None)
    if isinstance(pad, (list, tuple)):
        pad = pad[0] if pad else None
    return 0 if pad is None else int(pad)


# ----------------------------------------------------------------------------- entry points


def _is_off(comp: Compressor | None) -> bool:
    return comp is None or isinstance(comp, NoCompression)


def resolved_config(model: nn.Module, comp: Compressor | None) -> dict[str, Any]:
    """``comp``'s configuration as it runs on ``model`` (what gets written next to results): on
    a tower without [CLS], a method's default [CLS] score is recorded as the ``neg_cos`` it
    becomes there (:meth:`Adapter.score_request`); a pipeline's vision stage likewise."""
    config = compression_config(comp)
    if comp is None:
        return config
    vision = getattr(comp, "vision", comp)  # a pipeline's scores are its vision stage's
    target = config.get("vision", config)
    request = adapter_for(model).score_request(vision)
    if request is not None and "score" in target:
        target["score"] = request.kind
    return config


def prepare_inputs(
    model: nn.Module, comp: Compressor | None = None, **inputs: Any
) -> tuple[dict[str, Any], list[CompressedImage]]:
    """Compress the images and videos of a processor output for ``model``.

    Returns ``(kwargs, records)``: ``model(**kwargs)`` / ``model.generate(**kwargs)`` run the
    LLM on the compressed prompt (``input_ids`` with each image's placeholder run shortened
    to its surviving tokens, left-padded; ``attention_mask``; ``position_ids``; the kept
    visual tokens as ``mm_encoder_outputs``), and ``records`` describe the images, then the
    videos, in prompt order (``info()``, ``kept``; a video's per-frame budgets ``r_f``). Keys the compression does not consume (e.g. generation options)
    pass through. ``comp=None`` or ``none`` returns the inputs unchanged (the unpatched model)
    with keep-all records.
    """
    adapter = adapter_for(model)
    if "input_ids" not in inputs or inputs["input_ids"] is None:
        raise ValueError("prepare_inputs needs the processor's input_ids (the prompt with its image placeholders)")
    if _is_off(comp):
        return dict(inputs), adapter.uncompressed_records(inputs)
    if inputs.get("position_ids") is not None:
        raise ValueError("prepare_inputs computes position_ids for the compressed prompt; do not pass them")
    adapter.check(comp)
    encoded = adapter.encode(comp, inputs)
    if not encoded:
        return dict(inputs), []
    spliced = splice(
        inputs["input_ids"], inputs.get("attention_mask"),
        {adapter.token_id(m): [run_counts(r) for r in recs] for m, recs in encoded.items()}, _pad_id(model),
        hint="; pass the processor's output for these images/videos (with llava.hf.install active, "
        "call model.generate directly instead)",
        names={adapter.token_id(m): m for m in encoded},
    )
    kwargs = {k: v for k, v in inputs.items() if k not in adapter.consumed and k != "attention_mask"}
    kwargs["input_ids"] = spliced.input_ids
    kwargs["attention_mask"] = spliced.attention_mask
    kwargs["mm_encoder_outputs"] = {m: adapter.encoder_output(m, recs) for m, recs in encoded.items()}
    records = [r for recs in encoded.values() for r in recs]
    adapter.add_positions(kwargs, inputs, spliced)
    return kwargs, records


@contextlib.contextmanager
def llm_pruning(
    model: nn.Module, comp: Compressor | None, kwargs: dict[str, Any], records: list[CompressedImage]
) -> Iterator[None]:
    """While active, ``model(**kwargs)`` / ``model.generate(**kwargs)`` — ``kwargs, records``
    from :func:`prepare_inputs` — run ``comp``'s in-LLM stage (FastV, SparseVLM, PDrop, or a
    pipeline's second stage) in the prefill and keep decoding consistent with it; nothing
    happens for a compressor without one. :func:`generate` does this itself. After the
    prefill, ``records[i].llm`` holds image ``i``'s per-layer token counts."""
    method = llm_stage(comp)
    if method is None:
        yield
        return
    adapter = adapter_for(model)
    lm = adapter.language_model
    method.check_depth(len(lm.layers))
    ids = kwargs["input_ids"]
    mask = kwargs.get("attention_mask")
    image_ids = torch.full_like(ids, -1, dtype=torch.long)
    for modality, is_video in (("image", False), ("video", True)):
        which = [i for i, r in enumerate(records) if r.is_video == is_video]
        if not which:
            continue
        is_tok = ids == adapter.token_id(modality)
        if mask is not None:
            is_tok &= mask.bool()
        counts = [int(records[i].index.shape[0]) for i in which]
        if int(is_tok.sum()) != sum(counts):
            raise ValueError(f"in-LLM pruning: the prompt holds {int(is_tok.sum())} {modality} tokens, the records "
                             f"{sum(counts)} (pass prepare_inputs' kwargs and records)")
        local = pruned_stack.image_ids_from_runs(is_tok, counts)
        index = torch.tensor(which, dtype=torch.long, device=ids.device)
        image_ids = torch.where(is_tok, index[local.clamp_min(0)], image_ids)
    if (ids == adapter.image_token_id).any() and not (image_ids >= 0).any():
        raise ValueError("in-LLM pruning: the prompt holds image tokens but no records were given "
                         "(pass prepare_inputs' kwargs and records)")
    plan = pruned_stack.LLMPruning(method, image_ids, list(records))
    with pruned_stack.llm_pruning(lm, plan):
        yield


def generate(
    model: nn.Module, comp: Compressor | None = None, *, return_records: bool = False, **kwargs: Any
) -> torch.Tensor | tuple[torch.Tensor, list[CompressedImage]]:
    """``model.generate`` on the compressed prompt, returning what stock ``generate`` returns
    for the uncompressed one: the ORIGINAL ``input_ids`` followed by the new tokens (so
    harnesses that trim by the prompt length keep working). ``kwargs`` are the processor's
    outputs plus any generation options; ``return_records=True`` also returns the records.
    An in-LLM stage runs inside (:func:`llm_pruning`)."""
    gen_kwargs, records = prepare_inputs(model, comp, **kwargs)
    with llm_pruning(model, comp, gen_kwargs, records):
        out = model.generate(**gen_kwargs)
    if not _is_off(comp) and records:
        prompt = kwargs["input_ids"]
        out = torch.cat([prompt.to(out.device), out[:, gen_kwargs["input_ids"].shape[1] :]], dim=1)
    return (out, records) if return_records else out
