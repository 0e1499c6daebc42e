"""Qwen2-VL and Qwen2.5-VL (``Qwen2VLForConditionalGeneration``,
``Qwen2_5_VLForConditionalGeneration``), images and videos.

One dynamic-resolution view per image: the ViT sees ``h × w`` patches, the merger turns each
2×2 block into one LLM token, so the LLM sees a non-square ``h/2 × w/2`` grid without newlines.
Single-view methods apply (GlobalCom² with one view is its thumbnail rule: the top ``⌊N·R⌋``).

Scores per LLM token: ``neg_cos`` on the merger's input (the block's four last-layer patch
features, concatenated), ``attn_received`` from the scoring block's own queries and keys — with
its rotary embedding and its attention structure (one segment per image, or Qwen2.5-VL's
windows), read from the block's inputs by a forward pre-hook that is removed right after —
averaged over the four patches of each block.

Videos: a "frame" is one temporal patch (two sampled frames, ``t`` of ``video_grid_thw``) of
``h/2 × w/2`` merged tokens; the tower attends within a frame (Qwen2.5-VL: within its windows).
Video scores are taken on the merged tokens themselves (``neg_cos``: ``−cos`` to the frame's
mean), or ``attn_received`` as for images.

Positions: every kept token keeps the M-RoPE (t, h, w) position it has in the full grid, and
the text after an image or a video continues as it would have: the positions are the host's own
``get_rope_index`` on the uncompressed prompt, with the dropped tokens' columns removed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from llava.compression import AnyResLayout, CompressedImage, Compressor, ScoreRequest, VideoLayout
from llava.compression.scoring import neg_cos_scores, received_attention, request_layers
from llava.utils import execution_device, onloaded

from .core import Adapter, Spliced, register, text_positions


@register
class Qwen2VLAdapter(Adapter):
    class_names: ClassVar[tuple[str, ...]] = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
    consumed: ClassVar[tuple[str, ...]] = (
        "pixel_values", "image_grid_thw", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw",
        "second_per_grid_ts",
    )

    @property
    def has_cls(self) -> bool:
        return False

    @property
    def merge(self) -> int:
        return int(self.model.config.vision_config.spatial_merge_size)

    # ------------------------------------------------------------------ geometry

    def layout_for_grid(self, grid_thw) -> AnyResLayout:
        t, h, w = (int(x) for x in grid_thw)
        if t != 1:
            raise ValueError(f"an image grid has t = 1, got image_grid_thw {[t, h, w]}")
        m = self.merge
        return AnyResLayout.single_view(rows=h // m, cols=w // m, newline=False)

    def processed_layout(self, image_inputs: dict[str, Any], index: int, processor: Any) -> AnyResLayout:
        grid = image_inputs["image_grid_thw"][index]
        return self.layout_for_grid(grid.tolist() if hasattr(grid, "tolist") else grid)

    def image_layouts(self, inputs: dict[str, Any]) -> list[AnyResLayout]:
        grid = inputs.get("image_grid_thw")
        if grid is None:
            raise ValueError(f"{self.family} needs the processor's image_grid_thw")
        return [self.layout_for_grid(g) for g in grid.tolist()]

    def video_layout_for_grid(self, grid_thw) -> VideoLayout:
        """A video grid ``(t, h, w)``: ``t`` frames (temporal patches) of ``h/2 × w/2`` merged tokens."""
        t, h, w = (int(x) for x in grid_thw)
        m = self.merge
        return VideoLayout(t, h // m, w // m, newline=False)

    def video_layouts(self, inputs: dict[str, Any]) -> list[VideoLayout]:
        grid = inputs.get("video_grid_thw")
        if grid is None:
            raise ValueError(f"{self.family} needs the processor's video_grid_thw")
        return [self.video_layout_for_grid(g) for g in grid.tolist()]

    def processed_video_layout(self, video_inputs: dict[str, Any], index: int, processor: Any) -> VideoLayout:
        grid = video_inputs["video_grid_thw"][index]
        return self.video_layout_for_grid(grid.tolist() if hasattr(grid, "tolist") else grid)

    def token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``mm_token_type_ids`` as the processor makes them: 1 on image, 2 on video placeholders."""
        types = (input_ids == self.image_token_id).long()
        return types.masked_fill(input_ids == self.token_id("video"), 2)

    # ------------------------------------------------------------------ vision

    def unit_order(self, grid: torch.Tensor) -> torch.Tensor | None:
        """Where each LLM token's 2×2 block sits in the tower's internal order (Qwen2.5-VL
        attends in windows and permutes blocks accordingly; ``None`` = same order)."""
        visual = self.inner.visual
        if not hasattr(visual, "window_size"):
            return None
        from transformers.vision_utils import get_vision_window_index

        window_index, _ = get_vision_window_index(
            grid, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
            patch_size=visual.patch_size,
        )
        return window_index.to(grid.device)

    def vision(self, pixel_values: torch.Tensor, grid: torch.Tensor, request: ScoreRequest | None):
        """→ LLM tokens ``[M, D]`` (the merger's output, host order) and scores ``[M]``."""
        visual = self.inner.visual
        captured: dict[str, torch.Tensor] = {}
        blocks = visual.blocks
        hook = None
        if request is not None and request.kind == "attn_received":
            index = request_layers(request, len(blocks))[0]
            hook = _capture_received(blocks[index], captured)
        with hook if hook is not None else _nothing():
            dtype = next(visual.parameters()).dtype
            out = visual(pixel_values.to(device=execution_device(visual), dtype=dtype), grid_thw=grid)
        tokens = out.pooler_output  # [M, D], host order
        if request is None:
            return tokens, None
        unit = self.merge**2
        if request.kind == "neg_cos":
            feats = out.last_hidden_state.reshape(-1, unit * out.last_hidden_state.shape[-1])  # [M, 4C], tower order
        elif request.kind == "attn_received":
            feats = captured["received"].view(-1, unit).mean(dim=1)  # [M], tower order
        else:
            raise ValueError(f"unknown score kind {request.kind!r} for {self.family}")
        order = self.unit_order(grid)
        if order is not None:
            feats = feats[torch.argsort(order)]
        return tokens, feats

    # ------------------------------------------------------------------ compression

    def encode_images(self, comp: Compressor, inputs: dict[str, Any]) -> list[CompressedImage]:
        layouts = self.image_layouts(inputs)
        grid = inputs["image_grid_thw"]
        request = self.score_request(comp)
        tokens, feats = self.vision(inputs["pixel_values"], grid.to(execution_device(self.inner.visual)), request)
        counts = [lay.tokens_per_view for lay in layouts]
        if tokens.shape[0] != sum(counts):
            raise ValueError(f"the vision tower gave {tokens.shape[0]} tokens, image_grid_thw calls for {sum(counts)}")
        tokens = tokens.split(counts)
        feats = feats.split(counts) if feats is not None else [None] * len(layouts)
        newline = tokens[0].new_zeros(tokens[0].shape[-1])  # never used: no newlines in Qwen's layout
        out = []
        for t, f, lay in zip(tokens, feats, layouts):
            scores = None
            if f is not None:
                scores = neg_cos_scores(f[None]) if f.dim() == 2 else f[None].float()
            out.append(comp.compress(t[None], newline, lay, scores))
        return out

    def encode_videos(self, comp: Compressor, inputs: dict[str, Any]) -> list[CompressedImage]:
        """The tower on every temporal patch (attention within a frame, or a window of it) →
        the merged tokens ``[F, N, D]`` per video; ``neg_cos`` scores on those tokens,
        ``attn_received`` from the scoring block."""
        layouts = self.video_layouts(inputs)
        grid = inputs["video_grid_thw"]
        request = self.score_request(comp)
        attn = request if request is not None and request.kind == "attn_received" else None
        tokens, feats = self.vision(inputs["pixel_values_videos"], grid.to(execution_device(self.inner.visual)), attn)
        counts = [lay.num_tokens() for lay in layouts]
        if tokens.shape[0] != sum(counts):
            raise ValueError(f"the vision tower gave {tokens.shape[0]} tokens, video_grid_thw calls for {sum(counts)}")
        tokens = tokens.split(counts)
        feats = feats.split(counts) if feats is not None else [None] * len(layouts)
        out = []
        for t, f, lay in zip(tokens, feats, layouts):
            frames = t.view(lay.frames, lay.tokens_per_frame, -1)  # [F, N, D]
            scores = None
            if request is not None:
                scores = f.float().view(lay.frames, -1) if f is not None else neg_cos_scores(frames)
            out.append(comp.compress(frames, None, lay, scores))
        return out

    # ------------------------------------------------------------------ positions

    def full_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       mm_token_type_ids: torch.Tensor | None, image_grid_thw: torch.Tensor | None,
                       **grids: torch.Tensor | None) -> torch.Tensor:
        """The host's M-RoPE positions ``[3, B, L]`` of the uncompressed prompt (``grids``:
        ``video_grid_thw`` / ``second_per_grid_ts`` when the prompt also holds videos)."""
        if mm_token_type_ids is None:
            mm_token_type_ids = self.token_types(input_ids)
        host = type(self.inner).get_rope_index  # the class's own, whatever is installed on the instance
        positions, _ = host(
            self.inner, input_ids, mm_token_type_ids=mm_token_type_ids, image_grid_thw=image_grid_thw,
            attention_mask=attention_mask, **{k: v for k, v in grids.items() if v is not None},
        )
        return positions

    def compressed_positions(self, full: torch.Tensor, spliced: Spliced) -> tuple[torch.Tensor, torch.Tensor]:
        """``[3, B, L]`` full positions → ``([4, B, L'], rope_deltas [B, 1])``: the text row
        (from the mask, for the attention mask builder) then the survivors' own positions."""
        mask = spliced.attention_mask.to(full.device)
        mrope = spliced.take(full)  # [3, B, L']
        rows = torch.cat([text_positions(mask)[None], mrope])
        deltas = mrope.amax(dim=(0, 2)) + 1 - mask.long().sum(1)
        return rows, deltas[:, None]

    def add_positions(self, kwargs: dict[str, Any], inputs: dict[str, Any], spliced: Spliced) -> None:
        ids = inputs["input_ids"]
        types = inputs.get("mm_token_type_ids")
        full = self.full_positions(ids, inputs.get("attention_mask"), types, inputs.get("image_grid_thw"),
                                   video_grid_thw=inputs.get("video_grid_thw"),
                                   second_per_grid_ts=inputs.get("second_per_grid_ts"))
        kwargs["position_ids"], deltas = self.compressed_positions(full, spliced)
        types = self.token_types(ids) if types is None else types
        kwargs["mm_token_type_ids"] = spliced.take(types)
        # What the host's prefill would leave behind, so decoding without explicit positions continues right.
        self.inner.rope_deltas = deltas


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _capture_received(block: nn.Module, captured: dict[str, torch.Tensor]) -> Iterator[None]:
    """While active, the block's forward pre-hook stores ``captured["received"]`` ``[P]``: the
    attention each patch receives at this block (queries/keys recomputed from its input)."""

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        with onloaded(module):  # runs before an offloaded block's own weights are loaded
            captured["received"] = block_received_attention(module, hidden, kwargs["cu_seqlens"],
                                                            kwargs["position_embeddings"])

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def block_received_attention(
    block: nn.Module, hidden: torch.Tensor, cu_seqlens: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """A Qwen vision block's received attention per patch ``[P]`` float32: its queries and keys
    (``norm1`` → ``qkv`` → the vision rotary embedding, as the block computes them), attending
    within the segments of ``cu_seqlens`` (images, or Qwen2.5-VL's windows). Segments of equal
    length are batched, so the loop runs over distinct lengths, not segments."""
    attn = block.attn
    P = hidden.shape[0]
    qkv = attn.qkv(block.norm1(hidden)).reshape(P, 3, attn.num_heads, -1).permute(1, 0, 2, 3)
    q, k = qkv[0], qkv[1]  # [P, H, d]
    cos, sin = position_embeddings
    rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision
    q, k = rotate(q, k, cos, sin)
    bounds = cu_seqlens.to(torch.long)
    starts, lengths = bounds[:-1], bounds[1:] - bounds[:-1]
    out = torch.zeros(P, dtype=torch.float32, device=hidden.device)
    for n in sorted(set(lengths.tolist()) - {0}):
        idx = starts[lengths == n][:, None] + torch.arange(n, device=bounds.device)  # [S, n]
        idx = idx.to(hidden.device)
        q_s, k_s = q[idx].transpose(1, 2), k[idx].transpose(1, 2)  # [S, H, n, d]
        out[idx.reshape(-1)] = received_attention(q_s, k_s, attn.scaling).reshape(-1)
    return out
