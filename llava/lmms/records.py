"""What the plug-in's models report to lmms-eval about visual tokens.

Per sample — lmms-eval writes each answer's ``token_counts`` into the ``--log_samples`` file;
our models return :class:`VisualTokenCounts`, which adds to lmms-eval's ``input_tokens`` /
``output_tokens``::

    "visual_tokens": 732, "visual_tokens_uncompressed": 2928,
    "images": [{"tokens": 732, "tokens_uncompressed": 2928, "grid": [2, 2], "thumbnail_kept": 144,
                "crop_kept": [...], "budgets": [...]}],
    "videos": [{"tokens": 180, "tokens_uncompressed": 721, "frames": 4, "frame_shape": [14, 14],
                "frame_kept": [...], "budgets": [...], "frame_indices": [0, 10, 21, 31]}],
    "compression": {"name": "globalcom2", "retention_ratio": 0.25, ...}

(``videos`` only for samples with a video; the visual-token totals count images and videos; a
video's ``budgets`` are its per-frame budgets r_f and ``frame_indices`` the file's frames the
model saw.)

Per run — :class:`VisualTokenTally` adds the samples up and, at the end of each
``generate_until`` call, hands lmms-eval's throughput log (``log_metrics``) the visual-token
figures; lmms-eval writes them to the results file under ``"throughput"`` with an ``avg_``
prefix: ``avg_visual_token_ratio`` (kept ÷ uncompressed visual tokens over every image and
video), ``avg_visual_token_ratio/<task>``, ``avg_visual_tokens_per_image``,
``avg_visual_tokens_uncompressed_per_image`` (over the images, when there were images) and
``avg_visual_tokens_per_video``, ``avg_visual_tokens_uncompressed_per_video`` (over the
videos, when there were videos). In a
data-parallel run the figures are summed over all ranks first. (lmms-eval averages them over
``generate_until`` calls; it makes one call per run, several only when its response cache
answers some requests — those carry no counts.)
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from lmms_eval.api.instance import TokenCounts


@dataclass
class VisualTokenCounts(TokenCounts):
    """lmms-eval's per-request token counts plus the visual-token record of the sample."""

    visual: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **self.visual}


def sample_record(images: list[dict[str, Any]], compression: dict[str, Any],
                  videos: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The visual-token part of one sample's log entry (``images`` / ``videos``: one ``info()``
    per image / video)."""
    visuals = images + (videos or [])
    out = {
        "visual_tokens": sum(int(i["tokens"]) for i in visuals),
        "visual_tokens_uncompressed": sum(int(i["tokens_uncompressed"]) for i in visuals),
        "images": images,
    }
    if videos:
        out["videos"] = videos
    out["compression"] = compression
    return out


class VisualTokenTally:
    """Visual tokens kept / uncompressed per task and kind (image, video) over one
    ``generate_until`` call."""

    KINDS = ("image", "video")

    def __init__(self) -> None:
        self.start = time.perf_counter()
        # (task, kind) -> [kept, uncompressed, count]
        self.counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        self.generated = 0

    def add(self, task: str, record: dict[str, Any], output_tokens: int) -> None:
        for kind, key in zip(self.KINDS, ("images", "videos")):
            for info in record.get(key, ()):
                c = self.counts[task, kind]
                c[0] += int(info["tokens"])
                c[1] += int(info["tokens_uncompressed"])
                c[2] += 1
        self.generated += output_tokens

    def _merged(self) -> tuple[dict[tuple[str, str], list[int]], int]:
        """The counts summed over the ranks of a data-parallel run."""
        import torch.distributed as dist

        mine = ({k: list(v) for k, v in self.counts.items()}, self.generated)
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return mine
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, mine)
        counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        for part, _ in parts:
            for key, c in part.items():
                counts[key] = [a + b for a, b in zip(counts[key], c)]
        return dict(counts), sum(p[1] for p in parts)

    def metrics(self) -> dict[str, float]:
        """The visual-token figures (empty when no image or video was seen)."""
        counts, _ = self._merged()

        def total(select) -> list[int]:
            rows = [c for key, c in counts.items() if select(*key)]
            return [sum(c[i] for c in rows) for i in range(3)]

        kept, full, n = total(lambda task, kind: True)
        if n == 0:
            return {}
        out = {"visual_token_ratio": kept / max(1, full)}
        for kind in self.KINDS:
            k, f, m = total(lambda task, kd, kind=kind: kd == kind)
            if m:
                out[f"visual_tokens_per_{kind}"] = k / max(1, m)
                out[f"visual_tokens_uncompressed_per_{kind}"] = f / max(1, m)
        for task in sorted({task for task, _ in counts}):
            k, f, _ = total(lambda t, kind, task=task: t == task)
            out[f"visual_token_ratio/{task}"] = k / max(1, f)
        return out

    def log(self) -> dict[str, float]:
        """Hand the figures to lmms-eval's throughput log (see the module docstring)."""
        from lmms_eval.models.model_utils.gen_metrics import log_metrics

        figures = self.metrics()
        elapsed = time.perf_counter() - self.start
        log_metrics(total_elapsed_time=elapsed, total_gen_tokens=self.generated,
                    avg_speed=self.generated / elapsed if elapsed > 0 else 0.0, additional_metrics=figures)
        return figures
