"""What the [CLS] score tap adds to the vision tower's own time.

``python -m benchmarks.scoring_overhead`` builds a random CLIP ViT with the real CLIP-L/14-336
geometry (24 layers, 1024 wide, 16 heads, MLP 4096, 336 px, patch 14) as LLaVA's
``CLIPVisionTower`` (features from layer −2) and times, on a batch of 5 views (one AnyRes
image: thumbnail + 2×2 crops):

* ``tower(images)`` — no scores (the uncompressed path);
* ``tower(images, tap=(layer, lambda i, h: cls_attention_scores(layers[i], h, kind)))`` for
  ``kind`` in cls_logits / cls_softmax and ``layer`` in −1 / −2 (GlobalCom² uses cls_logits at
  −1, FasterVLM cls_softmax at −2).

Variants are interleaved repeat by repeat. The overhead is reported two ways:

* end to end: the median of the paired per-repeat differences (tapped − plain) / plain. A
  control variant — the plain tower timed a second time in each repeat — gives the noise floor
  of that figure on the current machine;
* the scorer alone: the same ``cls_attention_scores`` call timed (``--scorer-repeats`` times) on
  the hidden state it receives inside the tower, relative to the plain tower's median. This is
  the precise figure (it does not difference two multi-second timings) and decides the target.

Target: under 3 %.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from transformers import CLIPVisionConfig

from llava.compression.scoring import cls_attention_scores
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from llava.utils import synchronize

from .common import DTYPES, environment, format_table, resolve_device, resolve_dtype, write_json
from .profiles import CLIP_L_336

TARGET_PCT = 3.0
VARIANTS = (("cls_logits", -1), ("cls_logits", -2), ("cls_softmax", -1), ("cls_softmax", -2))


def build_tower(layers: int, width: int, heads: int, mlp: int, dtype, device, attn: str = "sdpa", seed: int = 0):
    cfg = {**CLIP_L_336, "num_hidden_layers": layers, "hidden_size": width, "num_attention_heads": heads,
           "intermediate_size": mlp}
    vcfg = CLIPVisionConfig(**cfg)
    torch.manual_seed(seed)
    tower = CLIPVisionTower(vcfg, select_layer=-2, select_feature="patch")
    try:
        tower.vision_tower.set_attn_implementation(attn)
    except (AttributeError, ValueError, ImportError):
        tower.vision_tower.config._attn_implementation = attn
    return tower.to(device=device, dtype=dtype).eval(), cfg


def run(args) -> dict[str, Any]:
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    tower, cfg = build_tower(args.layers, args.width, args.heads, args.mlp, dtype, device, args.attn, args.seed)
    layers = tower.vision_tower.encoder.layers
    g = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.views, 3, cfg["image_size"], cfg["image_size"], generator=g).to(device, dtype)

    def call(variant):
        if variant is None or variant == control:
            return tower(images)
        kind, layer = variant
        return tower(images, tap=(layer, lambda i, h: cls_attention_scores(layers[i], h, kind)))

    control = ("none (again)", None)
    variants: list[tuple[str, int | None] | None] = [None, control, *VARIANTS]
    times: dict[Any, list[float]] = {v: [] for v in variants}
    with torch.inference_mode():
        for _ in range(args.warmup):
            for v in variants:
                call(v)
        for rep in range(args.repeats):
            shift = rep % len(variants)  # rotate the order, so drifts do not favour one variant
            for v in variants[shift:] + variants[:shift]:
                synchronize(device)
                t0 = time.perf_counter()
                call(v)
                synchronize(device)
                times[v].append(time.perf_counter() - t0)

        # The scorer alone, on the very hidden state it receives inside the tower.
        scorer: dict[tuple[str, int], list[float]] = {}
        for kind, layer in VARIANTS:
            captured = {}
            tower(images, tap=(layer, lambda i, h, c=captured: c.setdefault("h", (i, h))))
            i, h = captured["h"]
            scorer[(kind, layer)] = []
            for _ in range(max(args.warmup, 1)):
                cls_attention_scores(layers[i], h, kind)
            for _ in range(args.scorer_repeats):
                synchronize(device)
                t0 = time.perf_counter()
                cls_attention_scores(layers[i], h, kind)
                synchronize(device)
                scorer[(kind, layer)].append(time.perf_counter() - t0)

    plain = statistics.median(times[None])
    noise = [100.0 * (a - b) / b for a, b in zip(times[control], times[None])]
    rows = [
        {"kind": "none", "layer": None, "median_ms": 1e3 * plain, "all_ms": [1e3 * t for t in times[None]]},
        {"kind": control[0], "layer": None, "median_ms": 1e3 * statistics.median(times[control]),
         "all_ms": [1e3 * t for t in times[control]], "overhead_pct_paired_median": statistics.median(noise),
         "overhead_pct_of_medians": 100.0 * (statistics.median(times[control]) - plain) / plain},
    ]
    for kind, layer in VARIANTS:
        tv = times[(kind, layer)]
        paired = [100.0 * (a - b) / b for a, b in zip(tv, times[None])]
        alone = statistics.median(scorer[(kind, layer)])
        rows.append({
            "kind": kind, "layer": layer, "median_ms": 1e3 * statistics.median(tv), "all_ms": [1e3 * t for t in tv],
            "overhead_pct_paired_median": statistics.median(paired),
            "overhead_pct_of_medians": 100.0 * (statistics.median(tv) - plain) / plain,
            "scorer_alone_ms": 1e3 * alone,
            "scorer_alone_pct": 100.0 * alone / plain,
            "target_met": 100.0 * alone / plain < TARGET_PCT,
        })
    return {
        "meta": {
            "tower": {k: cfg[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                           "intermediate_size", "image_size", "patch_size")},
            "select_layer": -2, "views": args.views, "dtype": str(dtype).replace("torch.", ""),
            "attn_implementation": args.attn, "repeats": args.repeats, "warmup": args.warmup,
            "scorer_repeats": args.scorer_repeats, "target_pct": TARGET_PCT,
            "target_rule": "scorer alone < target % of the plain tower median",
            "noise_floor_pct": statistics.median([abs(x) for x in noise]),
            "weights": "random", "environment": environment(device),
        },
        "results": rows,
    }


def render(payload: dict) -> str:
    m = payload["meta"]
    t = m["tower"]
    head = (f"CLIP tower {t['num_hidden_layers']} layers x {t['hidden_size']} ({t['num_attention_heads']} heads), "
            f"{m['views']} views, {m['dtype']}, {m['attn_implementation']}, median of {m['repeats']}")
    headers = ["score", "layer", "tower ms", "overhead % (paired)", "overhead % (medians)", "scorer ms",
               "scorer %", f"< {TARGET_PCT:g} %"]
    body = [
        [r["kind"], r["layer"], r["median_ms"], r.get("overhead_pct_paired_median"), r.get("overhead_pct_of_medians"),
         r.get("scorer_alone_ms"), r.get("scorer_alone_pct"),
         ("met" if r["target_met"] else "MISSED") if "target_met" in r else None]
        for r in payload["results"]
    ]
    foot = (f"'none (again)' = the plain tower timed twice per repeat: its paired 'overhead' is the noise floor "
            f"of the end-to-end columns (|median| {m['noise_floor_pct']:.2f} %); the target is judged on the scorer alone")
    return head + "\n" + format_table(headers, body) + "\n" + foot


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scoring_overhead", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=CLIP_L_336["num_hidden_layers"])
    ap.add_argument("--width", type=int, default=CLIP_L_336["hidden_size"])
    ap.add_argument("--heads", type=int, default=CLIP_L_336["num_attention_heads"])
    ap.add_argument("--mlp", type=int, default=CLIP_L_336["intermediate_size"])
    ap.add_argument("--views", type=int, default=5, help="views per batch (default 5: one 2x2 AnyRes image)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--scorer-repeats", type=int, default=20, help="timed calls of the scorer alone")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                    help="auto: float16 on CUDA; bfloat16 on CPUs with native bf16, else float32")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/scoring_overhead.json")
    return ap


def main(argv=None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.scorer_repeats < 1:
        raise SystemExit("error: --repeats >= 1, --warmup >= 0, --scorer-repeats >= 1")
    payload = run(args)
    write_json(args.out, payload)
    print(render(payload))
    print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
