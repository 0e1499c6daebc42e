"""The multimodal half of LLaVA: vision tower → projector → (compression) → splice into the
text embeddings. Mixed into the Llama/Mistral classes in ``language_model/``.

Read top to bottom: :meth:`LlavaMetaForCausalLM.encode_views` (views → features and, when
a compressor asks, token scores; ``encode_images`` is the original tree's projected-features
API, kept for callers of it), :meth:`LlavaMetaForCausalLM.pack_image` (the one point
where a compressor acts), :meth:`LlavaMetaForCausalLM.prepare_inputs_labels_for_multimodal`
(the spliced, padded sequence the LLM consumes).

Which compressor acts on a call, first match wins: the ``compressor=`` argument of
``forward``/``generate``/``images_to_tokens``; the one set by ``with model.compression(c):``
(per thread and per asyncio task); the attribute ``model.compressor`` (a convenience shared
by every caller of the model). Per-image records (:class:`CompressedImage`, tokens dropped)
go to the ``image_records`` list a caller passes, to the list ``model.compression(...)``
yields, and to ``model.last_images`` (the last call's, shared — racy across threads).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import replace

import torch
from torch import nn

from llava.compression import (
    AnyResLayout,
    CompressedImage,
    Compressor,
    NoCompression,
    ScoreRequest,
    Selection,
)
from llava.compression.in_llm import llm_stage
from llava.compression.scoring import (
    cls_attention_scores,
    join_tower_scores,
    neg_cos_scores,
    tower_score_parts,
    wants_tower_scores,
)
from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.errors import PromptTooLongError
from llava.utils import onloaded, synchronize

from .multimodal_encoder.builder import build_vision_tower
from .multimodal_projector.builder import build_vision_projector


def attach_multimodal(model: nn.Module, config) -> None:
    """Give the base LLM model (``self.model``) the original tree's multimodal modules:
    ``vision_tower``, ``mm_projector`` and (``spatial_unpad``) ``image_newline`` — so the
    weight names are ``model.vision_tower.*``, ``model.mm_projector.*``, ``model.image_newline``."""
    if getattr(config, "mm_vision_tower", None) is None:
        return
    model.vision_tower = build_vision_tower(config)
    model.mm_projector = build_vision_projector(config)
    if "unpad" in getattr(config, "mm_patch_merge_type", ""):
        model.image_newline = nn.Parameter(torch.zeros(config.hidden_size))


#: Per-call compression set by ``with model.compression(...)``: (model, compressor, records).
_ACTIVE: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("llava_compression", default=None)
_UNSET = object()


class LlavaMetaForCausalLM:
    """Multimodal input preparation shared by every LLaVA causal-LM class."""

    #: One record per image of the last multimodal call (layout, selection, token count).
    #: Shared by every caller of the model: per call, pass ``image_records=[]`` instead.
    last_images: list[CompressedImage]
    #: Set ``record_timings = True`` to accumulate stage wall times (s) in ``stage_times``.
    record_timings: bool = False
    stage_times: dict[str, float]

    def get_model(self):
        return self.model

    def get_vision_tower(self):
        return getattr(self.get_model(), "vision_tower", None)

    # ------------------------------------------------------------------ compression choice

    @property
    def compressor(self) -> Compressor | None:
        """The model-wide compressor (``None`` = off); checked against the tower when set."""
        return self.__dict__.get("_compressor")

    @compressor.setter
    def compressor(self, value: Compressor | None) -> None:
        self.check_compressor(value)
        self.__dict__["_compressor"] = value

    def check_compressor(self, compressor: Compressor | None) -> None:
        """Refuse, before any work, a compressor this model cannot run: a retention ratio that
        keeps no thumbnail token (``⌊N·R⌋ = 0``), a scoring layer the tower does not have, or
        in-LLM drop layers the LLM does not have."""
        if compressor is None:
            return
        if not isinstance(compressor, Compressor):
            raise TypeError(f"compressor must be a Compressor or None, got {type(compressor).__name__}")
        stage = llm_stage(compressor)
        if stage is not None:
            stage.check_depth(self.config.num_hidden_layers)
        tower = self.get_vision_tower()
        if tower is None:
            return
        compressor.check_geometry(tower.num_patches)
        request = compressor.score_request()
        if request is not None and request.kind != "neg_cos":
            for layer in (request.layer, *request.extra_layers):
                tower.check_tap_layer(layer)

    @contextlib.contextmanager
    def compression(self, compressor: Compressor | None) -> Iterator[list[CompressedImage]]:
        """``with model.compression(c) as records:`` — calls in this block (this thread / task
        only) use ``c`` (``None`` = off, whatever ``model.compressor`` says) and append their
        per-image records to ``records``."""
        self.check_compressor(compressor)
        records: list[CompressedImage] = []
        token = _ACTIVE.set((self, compressor, records))
        try:
            yield records
        finally:
            _ACTIVE.reset(token)

    def _resolve(self, compressor, image_records):
        """(compressor, [record lists]) for one call — see the module docstring."""
        sinks = [image_records] if image_records is not None else []
        active = _ACTIVE.get()
        if active is not None and active[0] is self:
            sinks.append(active[2])
            if compressor is _UNSET:
                compressor = active[1]
        if compressor is _UNSET:
            compressor = self.compressor
        else:
            self.check_compressor(compressor)
        return compressor, sinks

    # ------------------------------------------------------------------ vision features

    def encode_views(self, images: torch.Tensor, score_request: ScoreRequest | None = None):
        """Views ``[V, 3, S, S]`` → vision-tower features ``[V, N, C]`` (before the projector)
        and, when ``score_request`` is given, token scores ``[V, N]`` float32 (else None) — a
        :class:`~llava.compression.scoring.TowerScores` when it asks for keys or extra layers."""
        tower = self.get_vision_tower()
        if score_request is None:
            return tower(images), None
        if wants_tower_scores(score_request):  # several layers, each scored while the tower runs
            wanted, part = tower_score_parts(tower.vision_tower.encoder.layers, score_request)
            feats, parts = tower(images, tap=(wanted, part))
            return feats, join_tower_scores(parts, wanted)
        if score_request.kind == "neg_cos":
            feats = tower(images)
            return feats, neg_cos_scores(feats)
        layers = tower.vision_tower.encoder.layers
        kind = score_request.kind
        return tower(images, tap=(score_request.layer, lambda i, h: cls_attention_scores(layers[i], h, kind)))

    def encode_images(self, images: torch.Tensor, score_request: ScoreRequest | None = None):
        """Views ``[V, 3, S, S]`` → projected features ``[V, N, D]`` (the original API), plus
        scores ``[V, N]`` when ``score_request`` is given."""
        feats, scores = self.encode_views(images, score_request)
        feats = self.get_model().mm_projector(feats)
        return feats if score_request is None else (feats, scores)

    def image_layout(self, image_size, n_views: int) -> AnyResLayout:
        """Where the ``n_views`` views of an image of ``image_size`` (w, h) sit."""
        tower = self.get_vision_tower()
        side = tower.num_patches_per_side
        if n_views == 1:
            return AnyResLayout.single_view(side)
        if image_size is None:
            raise ValueError("image_sizes are required for multi-view (anyres) images")
        layout = AnyResLayout.for_image(
            tuple(int(x) for x in image_size), self.config.image_grid_pinpoints, tower.config.image_size, side
        )
        if layout.n_views != n_views:
            raise ValueError(
                f"an image of size {tuple(image_size)} tiles into {layout.n_crops} crops "
                f"({layout.grid_w}×{layout.grid_h}) + thumbnail, but {n_views} views were given"
            )
        return layout

    def pack_image(
        self, views: torch.Tensor, layout: AnyResLayout, scores: torch.Tensor | None, compressor=_UNSET
    ) -> CompressedImage:
        """The single point where compression happens: vision-tower features ``[V, N, C]``
        → packed LLM tokens ``[T, D]``. The projector runs on the kept tokens only (it is
        per-token, so this equals projecting everything and then selecting)."""
        if compressor is _UNSET:
            compressor = self.compressor
        projector = self.get_model().mm_projector
        merge = getattr(self.config, "mm_patch_merge_type", "flat")
        if merge == "flat":
            if compressor is not None and not isinstance(compressor, NoCompression):
                raise ValueError("compression needs mm_patch_merge_type='spatial_unpad' (LLaVA-NeXT)")
            tokens = projector(views.reshape(-1, views.shape[-1]))
            index = torch.arange(tokens.shape[0], device=tokens.device)
            keep = torch.ones(views.shape[1], dtype=torch.bool, device=tokens.device)
            return CompressedImage(tokens, index, Selection(keep, keep.new_zeros(0, keep.shape[0])), layout)
        compressor = compressor or NoCompression()
        with onloaded(self.get_model(), recurse=False):  # image_newline, also when a device_map offloaded it
            return compressor.compress(views, self.get_model().image_newline, layout, scores, project=projector)

    def images_to_tokens(
        self, images, image_sizes=None, compressor=_UNSET, image_records: list | None = None
    ) -> list[torch.Tensor]:
        """Every image's packed visual tokens ``[T_i, D]`` (in the order of the images).

        ``compressor`` overrides the model's for this call (``None`` = off); the records of
        the images are appended to ``image_records`` when given (see the module docstring)."""
        return self._images_to_packed(images, image_sizes, compressor, image_records)[0]

    def _images_to_packed(self, images, image_sizes, compressor, image_records):
        """``(tokens, records)`` of :meth:`images_to_tokens` (the records of this call)."""
        compressor, sinks = self._resolve(compressor, image_records)
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            images = list(images.unsqueeze(1))  # one view per image
        views_per_image = [int(x.shape[0]) for x in images]
        if image_sizes is not None and len(image_sizes) != len(views_per_image):
            raise ValueError(f"{len(views_per_image)} images but {len(image_sizes)} image_sizes")
        layouts = [
            self.image_layout(image_sizes[i] if image_sizes is not None else None, v)
            for i, v in enumerate(views_per_image)
        ]
        request = compressor.score_request() if compressor is not None else None
        with self._stage("vision"):
            feats, scores = self.encode_views(torch.cat(list(images), dim=0), request)
        feats = feats.split(views_per_image)
        scores = scores.split(views_per_image) if scores is not None else [None] * len(feats)
        with self._stage("compression"):  # token selection + projector on the kept tokens + packing
            packed = [self.pack_image(f, lay, s, compressor) for f, lay, s in zip(feats, layouts, scores)]
        records = [replace(p, tokens=None) for p in packed]
        for sink in sinks:
            sink.extend(records)
        self.last_images = records
        return [p.tokens for p in packed], records

    @contextlib.contextmanager
    def _stage(self, name: str):
        """Wall time of a stage into ``self.stage_times`` when ``self.record_timings`` is set
        (synchronising the device, so leave it off when not profiling)."""
        if not getattr(self, "record_timings", False):
            yield
            return
        device = self.device
        synchronize(device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(device)
            self.stage_times[name] = self.stage_times.get(name, 0.0) + time.perf_counter() - t0

    # ------------------------------------------------------------------ splicing

    def prepare_inputs_labels_for_multimodal(
        self, input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes=None,
        padding_side: str | None = None, *, compressor=_UNSET, image_records: list | None = None,
        too_long: str = "truncate", with_image_ids: bool = False,
    ):
        """Replace each ``IMAGE_TOKEN_INDEX`` in ``input_ids`` by that image's visual tokens.

        Returns ``(None, position_ids, attention_mask, past_key_values, inputs_embeds,
        labels)`` like the original tree. Padding in the input (either side) is removed
        using ``attention_mask`` and the spliced sequences are re-padded on
        ``padding_side`` (default: ``config.tokenizer_padding_side``, else right).

        A spliced sequence longer than ``config.tokenizer_model_max_length``:
        ``too_long="truncate"`` (the original tree's behaviour, used by ``forward`` — also in
        training, where the labels are cut with it) keeps its first ``max_length`` positions;
        ``too_long="raise"`` (used by ``generate``) raises :class:`PromptTooLongError`.
        Image positions always get the label ``IGNORE_INDEX``.

        ``with_image_ids=True`` appends a seventh item, ``(image_ids, records)``: the index of
        each position's image in ``records`` (``[B, L]``, −1 on text and padding) and this
        call's per-image records — what the in-LLM pruning methods need (``None`` when there
        are no images).
        """
        tower = self.get_vision_tower()
        if tower is None or images is None or input_ids.shape[1] == 1:
            out = (input_ids, position_ids, attention_mask, past_key_values, None, labels)
            return (*out, None) if with_image_ids else out
        if too_long not in ("truncate", "raise"):
            raise ValueError(f"too_long must be 'truncate' or 'raise', got {too_long!r}")

        image_tokens, records = self._images_to_packed(images, image_sizes, compressor, image_records)
        embed = self.get_model().embed_tokens
        keep_labels = labels is not None
        pos_given = position_ids is not None
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        attention_mask = attention_mask.bool()
        if labels is None:
            labels = torch.full_like(input_ids, IGNORE_INDEX)

        is_image = input_ids == IMAGE_TOKEN_INDEX
        n_placeholders = int(is_image.sum())
        if n_placeholders != len(image_tokens):
            raise ValueError(
                f"the prompt(s) hold {n_placeholders} image placeholder(s) but {len(image_tokens)} image(s) were given"
            )
        text_embeds = embed(input_ids.masked_fill(is_image, 0))  # [B, L, D]
        seqs, seq_labels, seq_ids, next_image = [], [], [], 0
        for b in range(input_ids.shape[0]):
            m = attention_mask[b]
            ids, emb, lab = input_ids[b][m], text_embeds[b][m], labels[b][m]
            cuts = torch.nonzero(ids == IMAGE_TOKEN_INDEX).flatten().tolist()
            parts, part_labels, part_ids, start = [], [], [], 0
            for c in cuts:
                img = image_tokens[next_image].to(device=emb.device, dtype=emb.dtype)  # [T_i, D]
                parts += [emb[start:c], img]
                part_labels += [lab[start:c], lab.new_full((img.shape[0],), IGNORE_INDEX)]
                part_ids += [lab.new_full((c - start,), -1), lab.new_full((img.shape[0],), next_image)]
                next_image += 1
                start = c + 1
            parts.append(emb[start:])
            part_labels.append(lab[start:])
            part_ids.append(lab.new_full((emb.shape[0] - start,), -1))
            seqs.append(torch.cat(parts))
            seq_labels.append(torch.cat(part_labels))
            seq_ids.append(torch.cat(part_ids))

        max_len = getattr(self.config, "tokenizer_model_max_length", None)
        if max_len is not None:
            if too_long == "raise":
                for b, s in enumerate(seqs):
                    if s.shape[0] > max_len:
                        raise PromptTooLongError(b, int(s.shape[0]), int(max_len))
            seqs = [s[:max_len] for s in seqs]
            seq_labels = [s[:max_len] for s in seq_labels]
            seq_ids = [s[:max_len] for s in seq_ids]
        side = padding_side or getattr(self.config, "tokenizer_padding_side", "right") or "right"
        inputs_embeds, new_labels, new_mask, new_pos = _pad(seqs, seq_labels, side)
        out = (
            None,
            new_pos if pos_given else None,
            new_mask,
            past_key_values,
            inputs_embeds,
            new_labels if keep_labels else None,
        )
        if not with_image_ids:
            return out
        image_ids = torch.full(new_mask.shape, -1, dtype=torch.long, device=new_mask.device)
        image_ids[new_mask] = torch.cat(seq_ids).to(new_mask.device)  # row-major, as the mask was filled
        return (*out, (image_ids, records))


def _pad(seqs: list[torch.Tensor], labels: list[torch.Tensor], side: str):
    """Pad ``[L_i, D]`` sequences to ``[B, L, D]`` on ``side`` with masks and positions."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    B, L = len(seqs), max(s.shape[0] for s in seqs)
    ref = seqs[0]
    embeds = ref.new_zeros(B, L, ref.shape[-1])
    out_labels = labels[0].new_full((B, L), IGNORE_INDEX)
    mask = torch.zeros(B, L, dtype=torch.bool, device=ref.device)
    pos = torch.zeros(B, L, dtype=torch.long, device=ref.device)
    for b, (s, lab) in enumerate(zip(seqs, labels)):
        n = s.shape[0]
        sl = slice(L - n, L) if side == "left" else slice(0, n)
        embeds[b, sl], out_labels[b, sl], mask[b, sl] = s, lab, True
        pos[b, sl] = torch.arange(n, device=ref.device)
    return embeds, out_labels, mask, pos
