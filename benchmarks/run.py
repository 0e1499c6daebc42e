"""Stage timings and memory of LLaVA-NeXT with each compression method × retention ratio.

``python -m benchmarks.run`` (what ``make bench`` runs) times, on the current device:

* ``vision``        — the vision tower (and the [CLS] score tap, when the method asks for one);
* ``compression``   — scoring-to-selection-to-packing (``model.compressor.compress``);
* ``splice``        — the rest of ``prepare_inputs_labels_for_multimodal`` (text embeddings, splice);
* ``prefill``       — one LLM forward over the spliced ``inputs_embeds`` (fresh KV cache);
* ``decode``        — per-token time of greedy decoding continuing from that prefill's cache;
* ``end_to_end``    — ``model.generate(input_ids, images=..., max_new_tokens=N)`` (exactly N tokens);
* ``memory``        — peak memory of one end-to-end ``generate`` above what was live before
  (CUDA ``max_memory_allocated``; CPU resident-set high-water mark, see
  :class:`benchmarks.common.MemoryProbe`), measured in a separate pass after the timings, plus
  the exact size of the KV cache after prefill.

In-LLM methods (FastV, SparseVLM, PDrop, pipelines such as ``globalcom2+fastv``) prune inside
the prefill; their rows add the visual tokens per layer, the per-layer FLOPs and KV cache. For
them the benchmark also runs, at ``--attention-maps-at`` ratios, a ``map`` variant that ranks
with the scoring layer's whole attention map (``[B, heads, L, L]``, float32 — what the peers'
releases materialise through eager attention) instead of the recomputed query rows, so the
peak-memory column shows what materialising attention costs. On an LLM shallower than 32
layers, SparseVLM's and PDrop's drop layers are scaled to the same relative depth
(:func:`scaled_layers`; FastV's ``K = 2`` is absolute).

Each configuration gets ``--warmup`` untimed passes, then ``--repeats`` timed passes,
interleaved across configurations (repeat 1 of every configuration, then repeat 2, …, the order
rotated each time) so that slow drifts of the machine hit every configuration alike. Reported: medians, and speed-ups
against the uncompressed run (``none``, always measured, in the same process), beside the
theoretical prefill FLOPs ratio (:func:`llava.analysis.efficiency.prefill_flops_per_layer`).

On a CPU the default ``--profile bench`` builds a scaled-down random model in memory (see
:mod:`benchmarks.profiles`): the real 336/14 AnyRes geometry and token counts, an LLM large
enough that prefill dominates. ``--model-path`` benchmarks a real local checkpoint instead.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from llava.analysis.efficiency import (
    LLMGeometry,
    kv_cache_bytes_per_layer,
    prefill_flops_per_layer,
    uniform_profile,
)
from llava.compression import build_compressor, option_names
from llava.compression.cli import method_name
from llava.compression.in_llm import llm_stage
from llava.conversation import default_conv_mode
from llava.mm_utils import (
    anyres_token_count,
    get_model_name_from_path,
    load_image,
    process_images,
    tokenizer_image_token,
)
from llava.model import hf_adapter, pruned_stack

from .common import (
    DTYPES,
    MemoryProbe,
    environment,
    ratio_arg,
    resolve_device,
    resolve_dtype,
    summary,
    timed,
    write_json,
)
from .profiles import PROFILES, build_profile_model, describe_model, load_checkpoint
from .report import add_ratios, plot, render

DEFAULT_METHODS = ("none", "globalcom2", "fastervlm", "uniform_random", "fastv", "sparsevlm")
DEFAULT_MAP_RATIOS = (0.1,)
DEFAULT_RATIOS = (1.0, 0.75, 0.5, 0.25, 0.1)
STAGES = ("vision", "compression", "splice", "prefill", "decode", "end_to_end")
QUERY = "Describe the image in detail."


@dataclass(frozen=True)
class Config:
    method: str
    ratio: float | None
    #: in-LLM methods: ``rows`` (recomputed query rows, ours) or ``map`` (the whole attention map)
    attention: str = "rows"
    num_layers: int = 32

    @property
    def series(self) -> str:
        return self.method + (" (map)" if self.attention == "map" else "")

    @property
    def label(self) -> str:
        if self.method == "none":
            return "none"
        return self.series if self.ratio is None else f"{self.method}@{self.ratio:g}" + (
            " map" if self.attention == "map" else "")

    def compressor(self):
        if self.method == "none":
            return None
        opts = {} if self.ratio is None else {"retention_ratio": self.ratio}
        stage = llm_stage(build_compressor(self.method, **opts))
        names = option_names(self.method)
        if "layers" in names:  # SparseVLM / PDrop: the same relative depth
            same_layer = all(s.score_layer == s.drop_layer for s in stage.stages())  # PDrop scores at its drop layer
            lo, hi = (1, self.num_layers - 1) if same_layer else (0, self.num_layers - 2)
            opts["layers"] = scaled_layers(stage.layers, self.num_layers, lo, hi)
            if "ratios" in names:
                opts["ratios"] = stage.ratios[: len(opts["layers"])]
        if "k" in names and stage.k >= self.num_layers:  # FastV on a toy LLM: the last possible layer
            opts["k"] = self.num_layers - 1
        return build_compressor(self.method, **opts)


def scaled_layers(layers: tuple[int, ...], num_layers: int, lo: int, hi: int, reference: int = 32) -> tuple[int, ...]:
    """Layers set for a ``reference``-layer LLM (LLaVA-NeXT-7B: 32) moved to the same relative
    depth of a ``num_layers``-layer one, ``round(l·num_layers/reference)`` kept strictly
    increasing within ``[lo, hi]`` (duplicates at ``hi`` merged)."""
    if num_layers >= reference:
        return tuple(layers)
    out: list[int] = []
    for layer in layers:
        v = max(lo, round(layer * num_layers / reference), (out[-1] + 1) if out else lo)
        out.append(min(v, hi))
    return tuple(dict.fromkeys(out))


def materialised_attention_rows(layer, hidden, cos, sin, rows, valid):
    """:func:`llava.model.pruned_stack.attention_rows` the releases' way: the whole ``[B, heads,
    L, L]`` attention map of the layer (float32), then the query rows."""
    B, L = hidden.shape[:2]
    every = torch.arange(L, device=hidden.device).expand(B, L)
    full = _ROWS(layer, hidden, cos, sin, every, valid)  # [B, L, L], built from the [B, H, L, L] map
    return full.gather(1, rows[:, :, None].expand(B, rows.shape[1], L))


_ROWS = pruned_stack.attention_rows


class attention_mode:
    """While active, in-LLM methods rank with ``materialised_attention_rows`` (``map``)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __enter__(self):
        if self.mode == "map":
            pruned_stack.attention_rows = materialised_attention_rows

    def __exit__(self, *exc):
        pruned_stack.attention_rows = _ROWS


def synthetic_image(size: tuple[int, int]) -> Image.Image:
    """A deterministic picture (gradient and a few shapes) of ``size`` (w, h)."""
    w, h = size
    x = np.linspace(0.0, 1.0, w)[None, :, None]
    y = np.linspace(0.0, 1.0, h)[:, None, None]
    arr = np.concatenate(
        [np.broadcast_to(40 + 150 * x, (h, w, 1)), np.broadcast_to(50 + 120 * y, (h, w, 1)),
         150 - 90 * x * y], axis=2,
    )
    im = Image.fromarray(arr.astype(np.uint8))
    d = ImageDraw.Draw(im)
    d.ellipse((0.1 * w, 0.2 * h, 0.4 * w, 0.65 * h), fill=(230, 40, 40))
    d.rectangle((0.6 * w, 0.1 * h, 0.9 * w, 0.4 * h), fill=(250, 220, 30))
    d.polygon([(0.6 * w, 0.9 * h), (0.75 * w, 0.55 * h), (0.9 * w, 0.9 * h)], fill=(30, 120, 230))
    return im


def build_inputs(model, tokenizer, processor, image: Image.Image, device, dtype, conv_mode: str = "llava_v1"):
    """``(input_ids [1, L], images [1, V, 3, S, S], image_sizes)`` for the ``conv_mode`` prompt."""
    from llava.conversation import build_chat_prompt

    prompt = build_chat_prompt(QUERY, model.config, conv_mode)
    input_ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt").unsqueeze(0).to(device)
    images = process_images([image], processor, model.config, device=device, dtype=dtype)
    return input_ids, images, [image.size]


class Harness:
    """Measures one configuration at a time on a loaded model and fixed inputs."""

    def __init__(self, model, input_ids, images, image_sizes, new_tokens: int, pad_token_id: int):
        self.model, self.input_ids, self.images, self.image_sizes = model, input_ids, images, image_sizes
        self.new_tokens, self.pad_token_id = new_tokens, pad_token_id
        self.device = model.device

    def _prepare(self):
        return self.model.prepare_inputs_labels_for_multimodal(
            self.input_ids, None, None, None, None, self.images, self.image_sizes, with_image_ids=True
        )

    def _generate(self):
        return self.model.generate(
            self.input_ids, images=self.images, image_sizes=self.image_sizes, do_sample=False,
            max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens, use_cache=True,
            pad_token_id=self.pad_token_id, temperature=None, top_p=None, top_k=None,
        )

    @torch.inference_mode()
    def measure(self, cfg: Config) -> dict[str, Any]:
        """One timed pass: every stage once. Returns seconds per stage and token counts."""
        model = self.model
        comp = model.compressor = cfg.compressor()
        model.record_timings, model.stage_times = True, {}
        t_prep, prep = timed(self._prepare, self.device)
        _, _, mask, _, embeds, _, spliced = prep
        vision = model.stage_times.get("vision", 0.0)
        compression = model.stage_times.get("compression", 0.0)
        model.record_timings = False
        record = model.last_images[0]
        plan = hf_adapter.llm_plan(comp, spliced)

        with attention_mode(cfg.attention):
            t_prefill, out = timed(
                lambda: model(inputs_embeds=embeds, attention_mask=mask, use_cache=True, logits_to_keep=1,
                              llm_pruning=plan), self.device
            )
            kv_bytes = _cache_bytes(out.past_key_values)
            steps = self.new_tokens - 1
            t_decode = None
            if steps > 0:
                t_decode = timed(functools.partial(self._decode, out, mask, steps), self.device)[0] / steps
            out = None  # free the prefill cache before generate

            t_e2e, gen = timed(self._generate, self.device)
        if gen.shape[1] != self.new_tokens:
            raise RuntimeError(f"generate made {gen.shape[1]} tokens, expected {self.new_tokens}")
        info = record.info()
        return {
            "tokens_per_layer": info["llm"]["sequence_tokens_per_layer"] if "llm" in info else None,
            "times": {
                "vision": vision, "compression": compression, "splice": t_prep - vision - compression,
                "prefill": t_prefill, "decode": t_decode, "end_to_end": t_e2e,
            },
            "visual_tokens": info["tokens"],
            "visual_tokens_uncompressed": info["tokens_uncompressed"],
            "sequence_length": int(embeds.shape[1]),
            "kv_cache_bytes": kv_bytes,
            "image": info,
        }

    def _decode(self, out, mask, steps: int):
        """Greedy decoding of ``steps`` tokens continuing from a prefill output's cache."""
        cache = out.past_key_values
        for _ in range(steps):
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            out = self.model(input_ids=tok, attention_mask=mask, past_key_values=cache, use_cache=True)
        return out

    @torch.inference_mode()
    def memory(self, cfg: Config, probe: MemoryProbe) -> dict[str, float]:
        """Peak memory of one end-to-end ``generate`` above what was live before it."""
        self.model.compressor = cfg.compressor()
        self.model.record_timings = False
        with attention_mode(cfg.attention):
            probe.start()
            self._generate()
            return probe.stop()


def _cache_bytes(cache) -> int:
    """Bytes held by the keys and values of a transformers cache."""
    total = 0
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for layer in layers:
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total
    for kv in cache:  # legacy tuple-of-tuples
        total += sum(t.numel() * t.element_size() for t in kv)
    return total


def build_configs(methods, ratios, map_ratios=(), num_layers: int = 32) -> list[Config]:
    """The uncompressed baseline, then every method × ratio (one configuration for a method
    without a retention ratio, e.g. PDrop), then the ``map`` variants of the in-LLM methods."""
    configs = [Config("none", 1.0, num_layers=num_layers)]
    for m in methods:
        if m == "none":
            continue
        if "retention_ratio" not in option_names(m):
            configs.append(Config(m, None, num_layers=num_layers))
            continue
        configs += [Config(m, r, num_layers=num_layers) for r in ratios]
    for m in methods:
        if m != "none" and llm_stage(build_compressor(m)) is not None:
            rs = [None] if "retention_ratio" not in option_names(m) else map_ratios
            configs += [Config(m, r, "map", num_layers) for r in rs if map_ratios]
    return configs


def profile(geom: LLMGeometry, tokens_per_layer: list[int] | None, seq: int) -> list[int]:
    """The tokens each layer processes: the in-LLM record's, or ``seq`` in every layer."""
    return list(tokens_per_layer) if tokens_per_layer else list(uniform_profile(geom, seq))


def run(args) -> dict[str, Any]:
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_path:
        tokenizer, model, processor, note = load_checkpoint(args.model_path, dtype, str(device))
        source = {"model_path": args.model_path}
    else:
        tokenizer, model, processor, note = build_profile_model(args.profile, dtype, str(device), args.seed)
        source = {"profile": args.profile}
    model.eval()
    image = load_image(args.image_file) if args.image_file else synthetic_image(tuple(args.image_size))
    # a checkpoint's own template (the original run_llava's rule); the built-in profiles are Vicuna-like
    conv_mode = default_conv_mode(get_model_name_from_path(args.model_path)) if args.model_path else "llava_v1"
    input_ids, images, sizes = build_inputs(model, tokenizer, processor, image, device, dtype, conv_mode)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    harness = Harness(model, input_ids, images, sizes, args.new_tokens, pad)
    configs = build_configs(args.methods, args.ratios, args.attention_maps_at, model.config.num_hidden_layers)

    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if not args.quiet else (lambda *a: None)
    log(f"[bench] {note}; device {device}, {dtype}, {torch.get_num_threads()} threads; "
        f"{len(configs)} configurations × ({args.warmup} warm-up + {args.repeats} repeats)")
    raw: dict[Config, list[dict]] = {c: [] for c in configs}
    for w in range(args.warmup):
        for c in configs:
            harness.measure(c)
        log(f"[bench] warm-up {w + 1}/{args.warmup} done")
    for rep in range(args.repeats):
        shift = rep % len(configs)  # rotate the order, so drifts do not favour one configuration
        for c in configs[shift:] + configs[:shift]:
            raw[c].append(harness.measure(c))
        base = raw[configs[0]][-1]["times"]  # the uncompressed configuration
        log(f"[bench] repeat {rep + 1}/{args.repeats} done (uncompressed prefill {1e3 * base['prefill']:.0f} ms)")
    memory: dict[Config, dict] = {}
    probe = MemoryProbe(device)
    if not args.no_memory:
        for c in configs:
            memory[c] = harness.memory(c, probe)
        log("[bench] memory pass done")

    geom = LLMGeometry.from_config(model.config.to_dict(), name=source.get("profile") or "checkpoint")
    value_bytes = torch.finfo(dtype).bits // 8
    rows = []
    for c in configs:
        runs = raw[c]
        first = runs[0]
        stages = {s: summary([r["times"][s] for r in runs if r["times"][s] is not None]) for s in STAGES}
        per_layer = first["tokens_per_layer"]
        text = first["sequence_length"] - first["visual_tokens"]
        visual_per_layer = None if per_layer is None else [t - text for t in per_layer]
        rows.append({
            "method": c.method,
            "series": c.series,
            "attention": c.attention,
            "ratio": c.ratio if c.ratio is not None else 1.0,
            "label": c.label,
            "compressor": c.compressor().to_dict() if c.method != "none" else {"name": "none"},
            "visual_tokens": first["visual_tokens"],
            "visual_tokens_uncompressed": first["visual_tokens_uncompressed"],
            "visual_tokens_per_layer": visual_per_layer,
            "sequence_length": first["sequence_length"],
            "image": first["image"],
            "times_ms": stages,
            "memory": {
                "kv_cache_mb": first["kv_cache_bytes"] / 2**20,
                "kv_cache_mb_theory": kv_cache_bytes_per_layer(
                    geom, profile(geom, per_layer, first["sequence_length"]), value_bytes) / 2**20,
                **({f"end_to_end_{k}": v for k, v in memory[c].items()} if c in memory else {}),
            },
            "theory": {
                "prefill_tflops": prefill_flops_per_layer(
                    geom, profile(geom, per_layer, first["sequence_length"])) / 1e12,
                "prefill_tflops_visual_only": prefill_flops_per_layer(
                    geom, profile(geom, visual_per_layer, first["visual_tokens"])) / 1e12,
            },
        })
    add_ratios(rows)
    payload = {
        "meta": {
            "source": source,
            "note": note,
            "model": describe_model(model),
            "dtype": str(dtype).replace("torch.", ""),
            "image_size": list(image.size),
            "image_file": args.image_file,
            "conv_mode": conv_mode,
            "visual_tokens_uncompressed": anyres_token_count(image.size, model.config.image_grid_pinpoints),
            "text_tokens": int(input_ids.shape[1]) - 1,
            "query": QUERY,
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "memory_method": probe.method if not args.no_memory else None,
            "statistic": "median over repeats; speedup = uncompressed median / configuration median; "
                         "speedup_best = the same with each configuration's fastest repeat",
            "theory": "prefill FLOPs from llava.analysis.efficiency.prefill_flops_per_layer over the spliced "
                      "sequence (visual + text tokens) each layer sees, full attention square as in the paper",
            "environment": environment(device),
        },
        "results": rows,
    }
    return payload


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--profile", default="bench", choices=list(PROFILES),
                     help="random model built in memory (default: bench)")
    src.add_argument("--model-path", default=None, help="benchmark a real local checkpoint instead")
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), type=method_name,
                    help="methods, pipelines too (default: %(default)s); the uncompressed baseline is always run")
    ap.add_argument("--ratios", nargs="+", type=ratio_arg, default=list(DEFAULT_RATIOS),
                    help="retention ratios (default: %(default)s)")
    ap.add_argument("--attention-maps-at", nargs="*", type=ratio_arg, default=list(DEFAULT_MAP_RATIOS),
                    help="ratios at which in-LLM methods are also run ranking with materialised attention maps "
                         "(default: %(default)s; none: give the flag without values)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per configuration (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed passes per configuration first (default 1)")
    ap.add_argument("--new-tokens", type=int, default=16, help="tokens generated end to end (default 16)")
    ap.add_argument("--image-size", nargs=2, type=int, default=[672, 672], metavar=("W", "H"),
                    help="synthetic image size (default 672 672: 2928 visual tokens; 1000 600 gives 1948)")
    ap.add_argument("--image-file", default=None, help="use this image instead of a synthetic one")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    ap.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                    help="auto: float16 on CUDA; bfloat16 on CPUs with native bf16, else float32")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-memory", action="store_true", help="skip the memory pass")
    ap.add_argument("--out", default="benchmarks/results/latest.json", help="JSON output")
    ap.add_argument("--plot", default=None, help="PNG output (default: --out with .png)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    ap.add_argument("--replot", default=None, metavar="JSON",
                    help="measure nothing: print the table and redraw the PNG of an earlier run's JSON")
    return ap


def main(argv=None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.new_tokens < 1:
        raise SystemExit("error: --repeats >= 1, --warmup >= 0, --new-tokens >= 1")
    if args.replot:
        with open(args.replot) as f:
            payload = json.load(f)
        add_ratios(payload["results"])
        out = args.replot
    else:
        payload = run(args)
        write_json(args.out, payload)
        out = args.out
        print(f"wrote {args.out}")
    print(render(payload))
    if not args.no_plot:
        path = args.plot or (out[:-5] if out.endswith(".json") else out) + ".png"
        plot(payload, path)
        payload["plot"] = path
        print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
