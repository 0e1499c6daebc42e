"""Positional bias of token pruning: the same crops fed to the LLM forward and in reverse.

``python -m llava.analysis.positional_bias --model-path DIR --image-file a.jpg,b.jpg
--methods globalcom2,fastv --retention-ratio 0.25 [--fastv-k 2 ...] --out-dir DIR``

For every image and method the prompt is run twice (prefill only): with the crops in the
host's raster order and with ``crop_order="reverse"`` (:mod:`llava.compression.layout`: crop
``j`` of ``n`` then sits at sequence slot ``n−1−j``; same tokens, same newlines). For each crop
it records how many of its visible tokens reach the LLM's last layer — the vision stage's
selection, narrowed by an in-LLM stage — and which ones. The report gives the kept share per
**crop position** (the crop's slot in the sequence) and per **crop content** (the crop itself)
in both orders, and whether each crop kept the same tokens in both orders. A method that
ranks by content (GlobalCom², FasterVLM) selects before the LLM sees any order, so its
per-crop selection is the same in both orders; a method ranking by the attention of the
prompt's last token (FastV) may favour whichever crops come last.

Writes ``positional_bias.json`` and ``positional_bias.png`` (kept share vs crop position,
forward vs reverse, one panel per method) to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch

from llava.compression import CompressedImage, build_compressor, option_names
from llava.compression.cli import add_compression_args, flag_name, given_options, method_name
from llava.compression.in_llm import surviving_selection
from llava.compression.layout import crop_valid_mask
from llava.utils import input_device

ORDERS = ("forward", "reverse")


@dataclass
class CropKeep:
    """One crop of one run: its index (content), its slot in the sequence, its visible
    token count, and the grid positions of its tokens that reach the last layer."""

    crop: int
    position: int
    visible: int
    kept: list[int]

    @property
    def share(self) -> float:
        return len(self.kept) / self.visible if self.visible else 0.0


def crop_keeps(record: CompressedImage, order: str) -> list[CropKeep]:
    """Per crop of ``record`` (in content order): what reached the LLM's last layer."""
    lay = record.layout
    _, crops = surviving_selection(record)
    valid = crop_valid_mask(lay, crops.device)
    out = []
    for j in range(lay.n_crops):  # a loop over crops (≤ a few dozen), host-side reporting
        kept = torch.nonzero(crops[j] & valid[j]).flatten().tolist()
        position = j if order == "forward" else lay.n_crops - 1 - j
        out.append(CropKeep(j, position, int(valid[j].sum()), kept))
    return out


def run_one(model, input_ids: torch.Tensor, pixels: torch.Tensor, size, compressor) -> CompressedImage:
    """The record of one prefill of ``model`` with ``compressor`` (no generation)."""
    records: list[CompressedImage] = []
    with torch.inference_mode():
        model(input_ids, images=pixels, image_sizes=[size], compressor=compressor, image_records=records,
              use_cache=False)
    return records[0]


def study(model, tokenizer, processor, images: list, query: str, methods: dict[str, dict[str, Any]],
          conv_mode: str = "llava_v1") -> dict[str, Any]:
    """Run every method (name → options) on every image in both crop orders; the report as a
    dict (see :func:`summarize`; ``crops`` lists every crop of every image)."""
    from llava.conversation import build_chat_prompt
    from llava.mm_utils import process_images, tokenizer_image_token

    prompt = build_chat_prompt(query, model.config, conv_mode)
    ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None].to(input_device(model))
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for idx, image in enumerate(images):
        pixels = process_images([image], processor, model.config, device=input_device(model), dtype=model.dtype)
        for name, opts in methods.items():
            per_order = {}
            for order in ORDERS:
                comp = build_compressor(name, crop_order=order, **opts)
                per_order[order] = crop_keeps(run_one(model, ids, pixels, image.size, comp), order)
            for f, r in zip(per_order["forward"], per_order["reverse"]):
                runs[name].append({
                    "image": idx, "crop": f.crop, "n_crops": len(per_order["forward"]), "visible": f.visible,
                    "position_forward": f.position, "position_reverse": r.position,
                    "kept_forward": len(f.kept), "kept_reverse": len(r.kept),
                    "share_forward": f.share, "share_reverse": r.share, "same_selection": f.kept == r.kept,
                })
    return {"query": query, "methods": {m: summarize(rows) | {"crops": rows} for m, rows in runs.items()}}


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Mean kept share per crop position (forward and reverse), per crop content, and the share
    of crops whose selection is the same in both orders."""
    n_pos = max((r["n_crops"] for r in rows), default=0)
    by_pos = {o: [[] for _ in range(n_pos)] for o in ORDERS}
    by_crop = [[] for _ in range(n_pos)]
    for r in rows:
        by_pos["forward"][r["position_forward"]].append(r["share_forward"])
        by_pos["reverse"][r["position_reverse"]].append(r["share_reverse"])
        by_crop[r["crop"]].append((r["share_forward"], r["share_reverse"]))

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    return {
        "by_position": {o: [mean(v) for v in by_pos[o]] for o in ORDERS},
        "by_content": [{"forward": mean([a for a, _ in v]), "reverse": mean([b for _, b in v])} for v in by_crop],
        "same_selection_share": mean([float(r["same_selection"]) for r in rows]),
    }


def plot(report: dict[str, Any], path: str) -> str:
    """Kept share vs crop position, forward vs reverse, one panel per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(report["methods"])
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.4), squeeze=False)
    for ax, m in zip(axes[0], methods):
        pos = report["methods"][m]["by_position"]
        for order, style in zip(ORDERS, ("o-", "s--")):
            ys = pos[order]
            xs = [i + 1 for i, y in enumerate(ys) if y is not None]
            ax.plot(xs, [100 * y for y in ys if y is not None], style, label=order)
        ax.set_title(m)
        ax.set_xlabel("crop position in the sequence")
        ax.set_ylabel("tokens kept (%)")
        ax.set_xticks(range(1, len(pos["forward"]) + 1))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def method_options(args: argparse.Namespace, methods: list[str]) -> dict[str, dict[str, Any]]:
    """The shared compression flags, handed to every method that takes them; a flag no method
    takes is an error (``crop_order`` is the study's own)."""
    given = given_options(args)
    if "crop_order" in given:
        raise SystemExit("error: --crop-order is set by the study itself (forward and reverse)")
    takers = {m: set(option_names(m)) for m in methods}
    unused = sorted(k for k in given if not any(k in t for t in takers.values()))
    if unused:
        raise SystemExit(f"error: no method of {', '.join(methods)} takes {', '.join(flag_name(k) for k in unused)}")
    return {m: {k: v for k, v in given.items() if k in takers[m]} for m in methods}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m llava.analysis.positional_bias", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", required=True, help="local LLaVA-NeXT checkpoint folder")
    ap.add_argument("--model-name", default=None)
    ap.add_argument("--image-file", required=True, help="image path(s), separated by --sep")
    ap.add_argument("--sep", default=",")
    ap.add_argument("--query", default="Describe the image in detail.")
    ap.add_argument("--conv-mode", default=None)
    ap.add_argument("--methods", default="globalcom2,fastv",
                    help="comma-separated methods (pipelines too), each run forward and reversed")
    ap.add_argument("--out-dir", default="positional_bias")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None)
    add_compression_args(ap)
    return ap


def main(argv=None) -> dict[str, Any]:
    from llava.mm_utils import get_model_name_from_path, load_image
    from llava.model.builder import load_pretrained_model

    args = build_parser().parse_args(argv)
    if args.compression != "none":
        raise SystemExit("error: name the methods with --methods (--compression is not used here)")
    methods = []
    for m in (x.strip() for x in args.methods.split(",") if x.strip()):
        try:
            methods.append(method_name(m))
        except argparse.ArgumentTypeError as e:
            raise SystemExit(f"error: --methods: {e}") from None
    if not methods:
        raise SystemExit("error: --methods names no method")
    options = method_options(args, methods)
    comps = {m: build_compressor(m, **options[m]) for m in methods}  # bad values fail before the model loads
    files = [f for f in args.image_file.split(args.sep) if f]
    images = [load_image(f) for f in files]
    name = args.model_name or get_model_name_from_path(args.model_path)
    tokenizer, model, processor, _ = load_pretrained_model(args.model_path, None, name, device=args.device,
                                                           dtype=args.dtype)
    for c in comps.values():
        model.check_compressor(c)
    from llava.conversation import default_conv_mode

    report = study(model, tokenizer, processor, images, args.query, options, args.conv_mode or default_conv_mode(name))
    report["images"] = files
    report["options"] = {m: comps[m].to_dict() for m in methods}
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "positional_bias.json"), "w") as f:
        json.dump(report, f, indent=2)
    plot(report, os.path.join(args.out_dir, "positional_bias.png"))
    for m in methods:
        s = report["methods"][m]
        fwd = ", ".join("-" if v is None else f"{100 * v:.1f}" for v in s["by_position"]["forward"])
        rev = ", ".join("-" if v is None else f"{100 * v:.1f}" for v in s["by_position"]["reverse"])
        print(f"{m}: kept % by crop position forward [{fwd}] reverse [{rev}]; "
              f"same selection in both orders for {100 * s['same_selection_share']:.0f}% of crops", file=sys.stderr)
    print(f"wrote {args.out_dir}/positional_bias.json and .png", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
