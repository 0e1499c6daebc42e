"""What the plug-in's models report to lmms-eval about visual tokens.

Per sample — lmms-eval writes each answer's ``token_counts`` into the ``--log_samples`` file;
our models return :class:`VisualTokenCounts`, which adds to lmms-eval's ``input_tokens`` /
``output_tokens``::

    "visual_tokens": 732, "visual_tokens_uncompressed": 2928,
    "images": [{"tokens": 732, "tokens_uncompressed": 2928, "grid": [2, 2], "thumbnail_kept": 144,
                "crop_kept": [...], "budgets": [...]}],
    "compression": {"name": "globalcom2", "retention_ratio": 0.25, ...}

Per run — :class:`VisualTokenTally` adds the samples up and, at the end of each
``generate_until`` call, hands lmms-eval's throughput log (``log_metrics``) the visual-token
figures; lmms-eval writes them to the results file under ``"throughput"`` with an ``avg_``
prefix: ``avg_visual_token_ratio`` (kept ÷ uncompressed visual tokens over every image),
``avg_visual_token_ratio/<task>``, ``avg_visual_tokens_per_image``,
``avg_visual_tokens_uncompressed_per_image``. In a data-parallel run the figures are summed over
all ranks first. (lmms-eval averages them over ``generate_until`` calls; it makes one call per
run, several only when its response cache answers some requests — those carry no counts.)
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


def sample_record(images: list[dict[str, Any]], compression: dict[str, Any]) -> dict[str, Any]:
    """The visual-token part of one sample's log entry (``images``: one ``info()`` per image)."""
    return {
        "visual_tokens": sum(int(i["tokens"]) for i in images),
        "visual_tokens_uncompressed": sum(int(i["tokens_uncompressed"]) for i in images),
        "images": images,
        "compression": compression,
    }


class VisualTokenTally:
    """Visual tokens kept / uncompressed per task over one ``generate_until`` call."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.kept: dict[str, int] = defaultdict(int)
        self.full: dict[str, int] = defaultdict(int)
        self.images: dict[str, int] = defaultdict(int)
        self.generated = 0

    def add(self, task: str, record: dict[str, Any], output_tokens: int) -> None:
        self.kept[task] += record["visual_tokens"]
        self.full[task] += record["visual_tokens_uncompressed"]
        self.images[task] += len(record["images"])
        self.generated += output_tokens

    def _merged(self) -> tuple[dict, dict, dict, int]:
        """The counts summed over the ranks of a data-parallel run."""
        import torch.distributed as dist

        mine = (dict(self.kept), dict(self.full), dict(self.images), self.generated)
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return mine
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, mine)
        kept, full, images = defaultdict(int), defaultdict(int), defaultdict(int)
        for k, f, n, _ in parts:
            for task in n:
                kept[task] += k[task]
                full[task] += f[task]
                images[task] += n[task]
        return dict(kept), dict(full), dict(images), sum(p[3] for p in parts)

    def metrics(self) -> dict[str, float]:
        """The visual-token figures (empty when no image was seen)."""
        kept, full, images, _ = self._merged()
        n = sum(images.values())
        if n == 0:
            return {}
        out = {
            "visual_token_ratio": sum(kept.values()) / max(1, sum(full.values())),
            "visual_tokens_per_image": sum(kept.values()) / n,
            "visual_tokens_uncompressed_per_image": sum(full.values()) / n,
        }
        for task in sorted(images):
            if images[task]:
                out[f"visual_token_ratio/{task}"] = kept[task] / max(1, full[task])
        return out

    def log(self) -> dict[str, float]:
        """Hand the figures to lmms-eval's throughput log (see the module docstring)."""
        from lmms_eval.models.model_utils.gen_metrics import log_metrics

        figures = self.metrics()
        elapsed = time.perf_counter() - self.start
        log_metrics(total_elapsed_time=elapsed, total_gen_tokens=self.generated,
                    avg_speed=self.generated / elapsed if elapsed > 0 else 0.0, additional_metrics=figures)
        return figures
