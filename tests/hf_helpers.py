"""Inputs shared by the tests of :mod:`llava.hf` (images, prompts, batched processor calls)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from llava.testing.tiny_hf import llava_prompt, qwen_prompt


def random_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def prompt_for(model, question: str, images: int = 1) -> str:
    return qwen_prompt(question, images) if "Qwen" in type(model).__name__ else llava_prompt(question, images)


def process(model, processor, sizes, questions=None, images_per_prompt: int = 1):
    """Processor outputs for images of ``sizes`` (w, h), ``images_per_prompt`` per prompt."""
    imgs = [random_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    n = len(sizes) // images_per_prompt
    questions = questions or [f"What is in picture {i}? Describe it." if i % 2 else "Color?" for i in range(n)]
    texts = [prompt_for(model, q, images_per_prompt) for q in questions]
    if images_per_prompt > 1:
        imgs = [imgs[i * images_per_prompt : (i + 1) * images_per_prompt] for i in range(n)]
    return processor(images=imgs, text=texts, return_tensors="pt", padding=True)


def until_eos(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


def new_tokens(out: torch.Tensor, prompt_len: int, eos: int) -> list[list[int]]:
    return [until_eos(r, eos) for r in out[:, prompt_len:].tolist()]


def host_image_tokens(model, inputs) -> list[torch.Tensor]:
    """What the unpatched model puts into each image's placeholder run (its own
    ``get_image_features``)."""
    keys = ("pixel_values", "image_sizes", "batch_num_images", "image_grid_thw")
    with torch.no_grad():
        out = type(model.model).get_image_features(model.model, **{k: inputs[k] for k in keys if k in inputs})
    return list(out.pooler_output)


def random_clip(frames: int, w: int = 120, h: int = 90, seed: int = 0) -> np.ndarray:
    """``[frames, h, w, 3]`` uint8: a random picture drifting a little from frame to frame
    (so neighbouring frames are alike, as in a real video)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 3)).astype(np.int16)
    drift = rng.integers(-40, 41, (frames, 1, 1, 3)).cumsum(0)
    noise = rng.integers(-12, 13, (frames, h, w, 3))
    return np.clip(base[None] + drift + noise, 0, 255).astype(np.uint8)


def video_prompt_for(model, question: str, images: int = 0, videos: int = 1) -> str:
    from llava.testing.tiny_hf import llava_prompt, qwen_prompt

    build = qwen_prompt if "Qwen" in type(model).__name__ else llava_prompt
    return build(question, images=images, videos=videos)


def process_videos(model, processor, clips, questions=None, images=None, fps: float | None = 1.0):
    """Processor outputs for one prompt per clip (``images[i]``: images put before row i's video),
    with every clip's metadata at ``fps`` frames a second (Qwen2.5-VL's temporal positions)."""
    n = len(clips)
    questions = questions or [f"What happens in video {i}?" if i % 2 else "Motion?" for i in range(n)]
    images = images or [[] for _ in range(n)]
    texts = [video_prompt_for(model, q, images=len(im)) for q, im in zip(questions, images)]
    kwargs = {}
    if fps is not None:
        kwargs["video_metadata"] = [{"total_num_frames": len(c), "fps": fps, "frames_indices": list(range(len(c)))}
                                    for c in clips]
    flat_images = [im for row in images for im in row]
    if flat_images:
        kwargs["images"] = flat_images
    return processor(videos=list(clips), text=texts, return_tensors="pt", padding=True, **kwargs)


def masked_full_reference(model, inputs, records):
    """Qwen: the unpatched model's inputs for the FULL prompt with every dropped image / video
    token masked out as a key (loops over rows and runs: an oracle independent of llava.hf's
    splice), and the host's own M-RoPE positions of that prompt → ``(mask, positions)``."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"].clone()
    queues = {model.config.image_token_id: [r for r in records if not r.is_video],
              model.config.video_token_id: [r for r in records if r.is_video]}
    for b in range(ids.shape[0]):
        row, p = ids[b].tolist(), 0
        while p < len(row):
            if row[p] in queues and mask[b, p]:
                rec = queues[row[p]].pop(0)
                n = rec.layout.num_tokens()
                assert row[p : p + n] == [row[p]] * n
                drop = torch.ones(n, dtype=torch.bool)
                drop[rec.kept] = False
                mask[b, p : p + n][drop] = 0
                p += n
            else:
                p += 1
    grids = {k: inputs[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts") if k in inputs}
    positions, _ = type(model.model).get_rope_index(model.model, ids, mm_token_type_ids=inputs["mm_token_type_ids"],
                                                    attention_mask=inputs["attention_mask"], **grids)
    return mask, positions


def write_video(path: str, frames: np.ndarray, fps: int) -> str:
    """``frames`` ``[F, H, W, 3]`` uint8 written to ``path`` with PyAV (mpeg4, ``fps`` a second)."""
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path
