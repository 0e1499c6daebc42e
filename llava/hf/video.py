"""Video inputs without torchvision: frames read with PyAV (or given as PIL frames / arrays),
sampled, resized, normalised and laid out exactly as transformers' video processors lay them out.

transformers' video processors (``LlavaOnevisionVideoProcessor``, ``Qwen2VLVideoProcessor``)
need torchvision, and the torchvision on the package index does not load beside a CPU torch.
:class:`VideoProcessor` is a drop-in for them: the same settings (read from the checkpoint the
way transformers reads them), the same keys and shapes (``pixel_values_videos`` —
``[videos, frames, 3, S, S]`` for OneVision, ``[t·h·w, 3·2·14·14]`` patches for Qwen —,
``video_grid_thw``, ``video_metadata``), the same frame sampling rules; every frame goes through
the resize / rescale / normalise functions of transformers' PIL image processors, so a frame
equals the image path bit for bit (a Qwen video of two identical frames *is* the image path).
Put on a processor (:func:`with_video_processor`), it makes the stock
``processor(videos=..., text=...)`` work: placeholders expanded by the processor's own
``replace_video_token``, ``mm_token_type_ids`` and Qwen2.5-VL's ``second_per_grid_ts`` computed
by the processor itself. Where torchvision is installed the stock video processor is kept.

:func:`read_video` samples frames from a file with PyAV, decoding only up to the last one it needs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.image_transforms import normalize, rescale, resize
from transformers.image_utils import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ChannelDimension,
    infer_channel_dimension_format,
)
from transformers.video_utils import (
    VideoMetadata,
    default_sample_indices_fn,
    make_batched_metadata,
    make_batched_videos,
)

from llava.utils import read_json

FAMILIES = ("onevision", "qwen2_vl")
_BICUBIC = 3  # PIL.Image.BICUBIC, the resample of both families' video processors

#: transformers' class defaults of each family's video processor (``LlavaOnevisionVideoProcessor``,
#: ``Qwen2VLVideoProcessor`` — which Qwen2.5-VL uses too).
DEFAULTS: dict[str, dict[str, Any]] = {
    "onevision": dict(
        size={"height": 384, "width": 384}, resample=_BICUBIC, image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD), rescale_factor=1 / 255, do_resize=True, do_rescale=True,
        do_normalize=True, do_sample_frames=False, num_frames=None, fps=None,
    ),
    "qwen2_vl": dict(
        size={"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768}, resample=_BICUBIC,
        image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD), rescale_factor=1 / 255,
        do_resize=True, do_rescale=True, do_normalize=True, do_sample_frames=False, num_frames=None, fps=None,
        patch_size=14, temporal_patch_size=2, merge_size=2, min_frames=4, max_frames=768,
        cap_pixels_per_frame=False, max_video_tokens=128000,
    ),
}
#: Call-time options besides the settings (the processor passes its ``videos_kwargs``).
CALL_OPTIONS = ("video_metadata", "return_metadata", "return_tensors")


def family_of(obj: Any) -> str:
    """``onevision`` or ``qwen2_vl`` from a model, processor or class name."""
    name = obj if isinstance(obj, str) else type(obj).__name__
    if "Onevision" in name or "onevision" in name:
        return "onevision"
    if "Qwen2VL" in name or "Qwen2_5_VL" in name or name in ("qwen2_vl", "qwen2_5_vl"):
        return "qwen2_vl"
    raise ValueError(f"no video processor for {name}; videos are supported for LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL")


# ----------------------------------------------------------------------------- reading files


def read_video(
    path: str | os.PathLike,
    num_frames: int | None = None,
    fps: float | None = None,
    sample_indices_fn: Callable[..., Sequence[int]] | None = None,
) -> tuple[np.ndarray, VideoMetadata]:
    """Frames of a video file, sampled uniformly: ``([F, H, W, 3] uint8 RGB, metadata)``.

    ``num_frames`` frames (``indices = arange(n)·total // n``, transformers' default rule), or
    ``fps`` frames a second, or ``sample_indices_fn(metadata=...)`` (e.g.
    :meth:`VideoProcessor.sample_frames` of a family whose rule differs); none of them: every
    frame. The metadata (``total_num_frames``, ``fps``, ``frames_indices``) is what transformers'
    PyAV reader returns. A missing or unreadable file is an error naming it."""
    import av

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file {path!r} not found")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"{path!r} holds no video stream")
            stream = container.streams.video[0]
            total = int(stream.frames or 0)
            if total <= 0:  # some containers do not record it: count by decoding
                total = sum(1 for _ in container.decode(video=0))
                container.seek(0)
            rate = float(stream.average_rate) if stream.average_rate else None
            meta = VideoMetadata(total_num_frames=total, fps=rate, width=stream.width, height=stream.height,
                                 duration=total / rate if rate else None, video_backend="pyav")
            if total == 0:
                raise ValueError(f"{path!r} holds no decodable frame")
            if sample_indices_fn is not None:
                indices = [int(i) for i in sample_indices_fn(metadata=meta)]
            else:
                indices = [int(i) for i in default_sample_indices_fn(meta, num_frames=num_frames, fps=fps)]
            wanted = set(indices)
            frames: dict[int, np.ndarray] = {}
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    frames[i] = frame.to_ndarray(format="rgb24")
                if i >= indices[-1]:
                    break
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot read video {path!r}: {e}") from None
    missing = [i for i in indices if i not in frames]
    if missing:
        raise ValueError(f"{path!r}: the container announces {total} frames but frame(s) {missing[:5]} could not be decoded")
    meta.frames_indices = indices
    return np.stack([frames[i] for i in indices]), meta


# ----------------------------------------------------------------------------- the processor


class VideoProcessor:
    """transformers' video processor of a family (``onevision``, ``qwen2_vl``), without torchvision.

    ``VideoProcessor("qwen2_vl", size=..., ...)`` with any of the family's settings
    (:data:`DEFAULTS`; Qwen's ``min_pixels`` / ``max_pixels`` as aliases of ``size``), or
    :meth:`from_pretrained` a checkpoint folder. Call it as transformers' video processors are
    called: ``vp(videos, num_frames=..., do_sample_frames=..., video_metadata=..., return_tensors="pt")``.
    """

    model_input_names_by_family = {"onevision": ["pixel_values_videos"],
                                   "qwen2_vl": ["pixel_values_videos", "video_grid_thw"]}

    def __init__(self, family: str, **settings: Any):
        if family not in FAMILIES:
            raise ValueError(f"unknown video processor family {family!r}; valid: {', '.join(FAMILIES)}")
        self.family = family
        values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS[family].items()}
        settings = dict(settings)
        if family == "qwen2_vl":  # transformers' aliases
            for alias, key in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
                if settings.get(alias) is not None:
                    values["size"][key] = int(settings.pop(alias))
                settings.pop(alias, None)
        unknown = sorted(set(settings) - set(values))
        if unknown:
            raise TypeError(f"{family} video processor does not take {', '.join(unknown)}; valid: {', '.join(values)}")
        values.update(settings)
        for k, v in values.items():
            setattr(self, k, v)
        self.model_input_names = list(self.model_input_names_by_family[family])

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, family: str | None = None) -> VideoProcessor:
        """The settings in a local checkpoint folder, looked up as transformers looks them up:
        ``processor_config.json``'s ``video_processor`` entry, else ``video_preprocessor_config.json``,
        else ``preprocessor_config.json``; the family from the file's processor type or ``config.json``."""
        path = os.fspath(path)
        found = None
        proc_file = os.path.join(path, "processor_config.json")
        if os.path.isfile(proc_file):
            found = read_json(proc_file).get("video_processor")
        for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
            if found is None and os.path.isfile(os.path.join(path, name)):
                found = read_json(os.path.join(path, name))
        if found is None:
            raise FileNotFoundError(f"{path!r} holds no video processor settings (processor_config.json, "
                                    "video_preprocessor_config.json or preprocessor_config.json)")
        if family is None:
            kind = found.get("video_processor_type") or found.get("image_processor_type") or found.get("processor_class")
            if kind is None and os.path.isfile(os.path.join(path, "config.json")):
                kind = read_json(os.path.join(path, "config.json")).get("model_type")
            family = family_of(str(kind))
        known = set(DEFAULTS[family]) | {"min_pixels", "max_pixels"}
        return cls(family, **{k: v for k, v in found.items() if k in known})

    # ------------------------------------------------------------------ sampling

    def sample_frames(self, metadata: VideoMetadata, num_frames: int | None = None, fps: float | None = None,
                       **_: Any) -> np.ndarray:
        """Which frames to keep — the family's own rule (its transformers processor's ``sample_frames``)."""
        num_frames = self.num_frames if num_frames is None else num_frames
        fps = self.fps if fps is None else fps
        if num_frames is not None and fps is not None:
            raise ValueError("`num_frames` and `fps` are mutually exclusive arguments, please use only one!")
        if self.family != "qwen2_vl":
            return default_sample_indices_fn(metadata, num_frames=num_frames, fps=fps)
        total, tps = metadata.total_num_frames, self.temporal_patch_size
        if num_frames is not None:
            num_frames = round(num_frames / tps) * tps
        elif fps is not None:
            if metadata.fps is None:
                raise ValueError("sampling `fps` frames a second needs the video's fps in its metadata")
            top = math.floor(min(self.max_frames, total) / tps) * tps
            num_frames = min(max(total / metadata.fps * fps, self.min_frames), top, total)
            num_frames = math.floor(num_frames / tps) * tps
        if num_frames is not None and num_frames > total:
            raise ValueError(f"cannot sample {num_frames} frames from a video of {total}")
        if num_frames is None:
            return np.arange(total)
        return torch.arange(0, total, total / num_frames).int().numpy()

    # ------------------------------------------------------------------ processing

    def __call__(self, videos: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(videos, **kwargs)

    def preprocess(self, videos: Any, **kwargs: Any) -> BatchFeature:
        opts = {k: kwargs.pop(k) for k in list(kwargs) if k in CALL_OPTIONS}
        sampling = {k: kwargs.pop(k) for k in ("num_frames", "fps") if k in kwargs}
        settings = {k: kwargs.pop(k) for k in list(kwargs) if hasattr(self, k) and k in DEFAULTS[self.family]}
        # Anything else (text or image options the processor hands every modality) is not ours.
        get = lambda k: settings[k] if settings.get(k) is not None else getattr(self, k)  # noqa: E731
        paths = isinstance(videos, (str, os.PathLike)) or (
            isinstance(videos, (list, tuple)) and videos and isinstance(videos[0], (str, os.PathLike)))
        if paths:
            items = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
            read = [read_video(p, sample_indices_fn=lambda metadata: self.sample_frames(metadata, **sampling))
                    for p in items]
            clips, metadata = [r[0] for r in read], [r[1] for r in read]
        else:
            clips = [_as_frames(v) for v in make_batched_videos(videos)]
            metadata = make_batched_metadata(clips, video_metadata=opts.get("video_metadata"))
            if get("do_sample_frames"):
                for i, (clip, meta) in enumerate(zip(clips, metadata)):
                    idx = self.sample_frames(meta, **sampling)
                    meta.frames_indices = [int(j) for j in idx]
                    clips[i] = clip[idx]
        processed = [self._frames(clip, get) for clip in clips]  # [F, C, H, W] float32 each
        data = self._onevision(processed) if self.family == "onevision" else self._qwen(processed, get)
        out = BatchFeature(data=data, tensor_type=opts.get("return_tensors"))
        if opts.get("return_metadata"):
            out["video_metadata"] = metadata
        return out

    def _frames(self, clip: np.ndarray, get) -> np.ndarray:
        """``[F, H, W, 3]`` uint8 → ``[F, 3, H', W']`` float32, frame by frame with transformers'
        PIL-backend functions (those of the family's PIL image processor)."""
        first = ChannelDimension.FIRST
        height, width = clip.shape[1:3]
        target = self._target_size(height, width, len(clip), get) if get("do_resize") else None
        out = []
        for frame in clip:
            x = np.moveaxis(frame, -1, 0)  # [3, H, W]
            if target is not None:
                x = resize(x, size=target, resample=get("resample"), data_format=first, input_data_format=first)
            if get("do_rescale"):
                x = rescale(x, scale=get("rescale_factor"), data_format=first, input_data_format=first)
            if get("do_normalize"):
                x = normalize(x, mean=get("image_mean"), std=get("image_std"), data_format=first, input_data_format=first)
            out.append(np.asarray(x, dtype=np.float32))
        return np.stack(out)

    def _target_size(self, height: int, width: int, frames: int, get) -> tuple[int, int]:
        size = get("size")
        if self.family == "onevision":
            if "height" not in size or "width" not in size:
                raise ValueError(f"the OneVision video processor resizes to size['height'] × size['width'], got {size}")
            return int(size["height"]), int(size["width"])
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        factor = get("patch_size") * get("merge_size")
        max_pixels = size["longest_edge"]
        if get("cap_pixels_per_frame"):  # qwen-vl-utils' total-video pixel budget
            total_pixels = int(get("max_video_tokens") * factor * factor * 0.9)
            max_pixels = max(min(max_pixels, total_pixels * get("temporal_patch_size") // frames),
                             int(size["shortest_edge"] * 1.05))
        return smart_resize(height, width, factor=factor, min_pixels=size["shortest_edge"], max_pixels=max_pixels)

    @staticmethod
    def _onevision(processed: list[np.ndarray]) -> dict[str, Any]:
        """``pixel_values_videos`` ``[videos, F, 3, S, S]`` (a list when frame counts differ)."""
        tensors = [torch.from_numpy(p) for p in processed]
        same = all(t.shape == tensors[0].shape for t in tensors)
        return {"pixel_values_videos": torch.stack(tensors) if same else tensors}

    @staticmethod
    def _qwen(processed: list[np.ndarray], get) -> dict[str, Any]:
        """Qwen's patches: every temporal patch (``temporal_patch_size`` frames, the last frame
        repeated to fill it) cut into ``merge × merge`` blocks of ``patch × patch`` pixels, in the
        video processor's order → ``pixel_values_videos`` ``[Σ t·h·w, 3·tps·p·p]``, ``video_grid_thw``."""
        p, m, tps = get("patch_size"), get("merge_size"), get("temporal_patch_size")
        patches, grids = [], []
        for video in processed:
            x = torch.from_numpy(video)  # [F, C, H, W]
            if pad := -x.shape[0] % tps:
                x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
            frames, channels, height, width = x.shape
            t, h, w = frames // tps, height // p, width // p
            x = x.view(t, tps, channels, h // m, m, p, w // m, m, p)
            x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # t, h/m, w/m, m, m, C, tps, p, p
            patches.append(x.reshape(t * h * w, channels * tps * p * p))
            grids.append([t, h, w])
        return {"pixel_values_videos": torch.cat(patches), "video_grid_thw": torch.tensor(grids)}

    def to_dict(self) -> dict[str, Any]:
        return {"video_processor_type": f"llava.hf.video.VideoProcessor[{self.family}]",
                **{k: getattr(self, k) for k in DEFAULTS[self.family]}}

    def __repr__(self) -> str:
        return f"VideoProcessor({self.family!r}, {json.dumps(self.to_dict(), default=str)})"


def _as_frames(video: Any) -> np.ndarray:
    """One video (4-D array / tensor, or a list of PIL frames already stacked by transformers)
    → ``[F, H, W, 3]`` uint8."""
    if isinstance(video, torch.Tensor):
        video = video.cpu().numpy()
    video = np.asarray(video)
    if video.ndim != 4:
        raise ValueError(f"a video is a sequence of frames [F, H, W, 3]; got an array of shape {video.shape}")
    if infer_channel_dimension_format(video[0], num_channels=(1, 3, 4)) == ChannelDimension.FIRST:
        video = np.moveaxis(video, 1, -1)
    if video.shape[-1] == 4:  # RGBA → RGB
        video = video[..., :3]
    elif video.shape[-1] == 1:
        video = np.repeat(video, 3, axis=-1)
    if video.dtype != np.uint8:
        raise ValueError(f"video frames must be uint8 RGB (0–255), got dtype {video.dtype}")
    return video


def with_video_processor(processor: Any, video_processor: VideoProcessor | None = None,
                         model_path: str | os.PathLike | None = None) -> Any:
    """``processor`` able to take ``videos=``: its own video processor when it has one (stock
    transformers with torchvision), else ``video_processor``, else a :class:`VideoProcessor`
    read from ``model_path`` (or the family's defaults). Sets the attribute on this instance."""
    if getattr(processor, "video_processor", None) is not None:
        return processor
    if video_processor is None:
        family = family_of(processor)
        video_processor = (VideoProcessor.from_pretrained(model_path, family) if model_path is not None
                           else VideoProcessor(family))
    processor.video_processor = video_processor
    return processor
