"""Command line of ``python -m llava.analysis.efficiency``: parse, build the rows, print them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from llava.analysis.efficiency.formulas import NOMINAL_TOKENS, anyres_image_tokens
from llava.analysis.efficiency.geometry import (
    ACCELERATORS,
    BUILTIN_GEOMETRIES,
    DEFAULT_ACCELERATOR,
    Accelerator,
    LLMGeometry,
)
from llava.analysis.efficiency.paper import PAPER_NOTE, paper_explanation, paper_key
from llava.analysis.efficiency.tables import (
    DEFAULT_METHOD,
    DEFAULT_RATIOS,
    efficiency_table,
    in_llm_table,
    render_aaai_table,
    render_main_table,
    render_paper_table,
)


def _token_arg(text: str) -> int | tuple[str, int]:
    label, sep, count = text.rpartition("=")
    try:
        value = int(count)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected N or LABEL=N, got {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"token counts must be positive, got {value}")
    return (label, value) if sep and label else value


def ratio_arg(text: str) -> float:
    """argparse type: a retention ratio in (0, 1]."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"retention ratios must be in (0, 1], got {value}")
    return value


def _accel_arg(text: str) -> list[Accelerator]:
    if text.lower() == "all":
        return list(ACCELERATORS.values())
    try:
        return [Accelerator.parse(text)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser(compression: bool = False) -> argparse.ArgumentParser:
    """The parser; ``compression=True`` adds the shared compression flags (``--compression
    fastv --fastv-k 2 ...``, see :mod:`llava.compression.cli`), which import torch — so they
    are only added when ``--compression`` is on the command line."""
    accels = ", ".join(
        f"{a.name} ({a.peak_tflops:g} TFLOP/s, {a.bandwidth_tbps:g} TB/s)" for a in ACCELERATORS.values()
    )
    parser = argparse.ArgumentParser(
        prog="python -m llava.analysis.efficiency",
        description=(
            "Theoretical cost of the LLM prefill over LLaVA-NeXT's visual tokens, per retention ratio R:\n"
            "token count, prefill TFLOPs, KV-cache size and roofline (LLM-Viewer method) prefill and\n"
            "per-token decode time, with and without FlashAttention-style fused attention."
        ),
        epilog=(
            "Examples:\n"
            "  python -m llava.analysis.efficiency --model 7b --paper\n"
            "  python -m llava.analysis.efficiency --image-size 1000 600 --ratios 1 0.25\n"
            "  python -m llava.analysis.efficiency --config path/to/config.json --tokens 2928 FastV=732 "
            "--image-size 672 672\n"
            "  python -m llava.analysis.efficiency --config path/to/onevision/config.json --frames 32 "
            "--tokens-per-frame 196\n"
            "  python -m llava.analysis.efficiency --accelerator all --json\n"
            "  python -m llava.analysis.efficiency --model 7b --compression sparsevlm --ratios 1 0.1 --paper\n"
            "  python -m llava.analysis.efficiency --compression globalcom2+fastv --fastv-k 2 --ratios 0.1\n"
            "\nIn-LLM methods: --compression NAME (fastv, sparsevlm, pdrop, or VISION+LLM such as\n"
            "globalcom2+fastv) with the shared compression flags (`--compression fastv --help` lists them);\n"
            "their rows sum the costs layer by layer (the first layers see every token).\n"
            f"\nBuilt-in accelerators: {accels}."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = parser.add_argument_group("model")
    src.add_argument(
        "--model", nargs="+", choices=sorted(BUILTIN_GEOMETRIES), default=None,
        help="built-in LLaVA-NeXT LLM geometries (default: 7b 13b, unless --config is given)",
    )  # fmt: skip
    src.add_argument(
        "--config", action="append", default=[], metavar="PATH",
        help="a LLaVA / Llama config.json (or its directory); repeatable. Reads num_hidden_layers, "
        "hidden_size, intermediate_size, num_attention_heads and num_key_value_heads if present",
    )  # fmt: skip
    tok = parser.add_argument_group("tokens")
    tok.add_argument(
        "--ratios", nargs="+", type=ratio_arg, default=list(DEFAULT_RATIOS), metavar="R",
        help="retention ratios (default: 1 0.75 0.5 0.25 0.1)",
    )  # fmt: skip
    tok.add_argument(
        "--method", default=DEFAULT_METHOD,
        help=f"label of the compressed rows (default: {DEFAULT_METHOD}; R = 1 rows are 'uncompressed')",
    )  # fmt: skip
    tok.add_argument(
        "--image-size", nargs=2, type=int, metavar=("W", "H"),
        help="use the real LLaVA-NeXT (v1.6 AnyRes, spatial_unpad) token count of a WxH image and "
        "T = floor(R*count), instead of the paper's nominal T = R*2880",
    )  # fmt: skip
    tok.add_argument(
        "--frames", type=int, metavar="F",
        help="a video of F frames (with --tokens-per-frame N): the count is F*N and T = floor(R*F*N), "
        "what the video methods keep with budget='exact'",
    )  # fmt: skip
    tok.add_argument(
        "--tokens-per-frame", type=int, metavar="N",
        help="visual tokens per frame (LLaVA-OneVision: 196 = 14x14 pooled; Qwen2-VL: h*w/4 per temporal "
        "patch of two frames, e.g. 300 at 420x560 px)",
    )  # fmt: skip
    tok.add_argument(
        "--tokens", nargs="+", type=_token_arg, metavar="N|LABEL=N",
        help="actual kept visual-token counts (e.g. from a run) instead of ratios; R is then N / count",
    )  # fmt: skip
    tok.add_argument(
        "--text-tokens", type=int, default=0, metavar="N",
        help="prompt tokens added to the prefill and the decode context (default 0: visual tokens only, "
        "as the paper)",
    )  # fmt: skip
    cost = parser.add_argument_group("cost model")
    cost.add_argument(
        "--causal", action="store_true",
        help="halve the T^2 attention term (FlashAttention-style causal tile skipping); the paper "
        "counts the full square",
    )  # fmt: skip
    cost.add_argument(
        "--kv-bytes", type=float, default=2, metavar="B",
        help="bytes per cached key/value element (default 2, fp16)",
    )  # fmt: skip
    cost.add_argument(
        "--accelerator", action="append", type=_accel_arg, metavar="NAME|NAME:TFLOPS:TBPS",
        help=f"repeatable; a built-in name, 'all', or a custom spec (default: {DEFAULT_ACCELERATOR})",
    )  # fmt: skip
    if compression:
        from llava.compression.cli import add_compression_args

        add_compression_args(parser)
    else:
        parser.add_argument_group("compression").add_argument(
            "--compression", metavar="METHOD",
            help="a compression method (in-LLM ones too: fastv, sparsevlm, pdrop, globalcom2+fastv, ...); "
            "with it the shared compression flags are accepted (--fastv-k, --prune-layers, ...)",
        )  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the rows as a JSON list of objects")
    out.add_argument(
        "--paper", action="store_true",
        help="add the paper's Tables VI/VII (TFLOPs, KV MB, prefill ms) beside the estimates, the "
        "implied effective TFLOP/s and an explanation of the prefill-time difference",
    )  # fmt: skip
    return parser


def _compressors(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[tuple[float | None, Any]]:
    """``(R, compressor)`` per ``--ratios`` (one row, ``R = None``, for a method without a
    retention ratio) from ``--compression`` and the shared flags."""
    from llava.compression import build_compressor, option_names
    from llava.compression.cli import flag_name, given_options

    name = args.compression
    given = given_options(args)
    if "retention_ratio" in given:
        parser.error("give the retention ratios with --ratios (one row each), not --retention-ratio")
    bad = sorted(set(given) - set(option_names(name)))
    if bad:
        parser.error(f"--compression {name} does not take {', '.join(flag_name(b) for b in bad)}")
    try:
        if "retention_ratio" not in option_names(name):
            return [(None, build_compressor(name, **given))]
        return [(r, build_compressor(name, retention_ratio=r, **given)) for r in args.ratios]
    except (TypeError, ValueError) as exc:
        parser.error(f"--compression {name}: {exc}")


def aaai_rows(geoms: Sequence[LLMGeometry], base: int, text_tokens: int) -> list[dict[str, Any]]:
    """The AAAI comparison (7B, R = 10 %) for every geometry shaped like LLaVA-NeXT-7B:
    uncompressed, GlobalCom² and FasterVLM (every layer at R·2880), FastV and SparseVLM (their
    default schedules) — imports torch for the in-LLM methods' arithmetic."""
    out: list[dict[str, Any]] = []
    for geom in geoms:
        if paper_key(geom) != "llava-next-7b" or base != NOMINAL_TOKENS or text_tokens:
            continue
        from llava.compression import build_compressor

        out += efficiency_table(geom, [1.0], paper=True)
        for name in ("GlobalCom²", "FasterVLM"):
            out += efficiency_table(geom, [0.1], method=name, paper=True)
        out += in_llm_table(geom, [(0.1, build_compressor(m, retention_ratio=0.1)) for m in ("fastv", "sparsevlm")],
                            paper=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(any(a == "--compression" or a.startswith("--compression=") for a in argv))
    args = parser.parse_args(argv)
    if args.text_tokens < 0:
        parser.error("--text-tokens must be >= 0")
    if args.kv_bytes <= 0:
        parser.error("--kv-bytes must be > 0")
    geoms: list[LLMGeometry] = []
    for path in args.config:
        try:
            geoms.append(LLMGeometry.from_config(path))
        except (OSError, KeyError, ValueError) as exc:
            parser.error(f"--config {path}: {exc}")
    if args.model or not geoms:
        geoms += [BUILTIN_GEOMETRIES[k]() for k in (args.model or ["7b", "13b"])]
    accels = [a for group in (args.accelerator or [[ACCELERATORS[DEFAULT_ACCELERATOR]]]) for a in group]
    accels = list(dict.fromkeys(accels))
    base = NOMINAL_TOKENS
    video = (args.frames, args.tokens_per_frame)
    if (video[0] is None) != (video[1] is None):
        parser.error("--frames and --tokens-per-frame go together")
    if args.frames is not None:
        if args.image_size:
            parser.error("--frames/--tokens-per-frame (a video) and --image-size (an image) exclude each other")
        if args.frames <= 0 or args.tokens_per_frame <= 0:
            parser.error("--frames and --tokens-per-frame need positive counts")
        base = args.frames * args.tokens_per_frame
    if args.image_size:
        w, h = args.image_size
        if w <= 0 or h <= 0:
            parser.error("--image-size needs positive W H")
        base = anyres_image_tokens(w, h)  # imports torch: only when needed
    rows: list[dict[str, Any]] = []
    comps = _compressors(args, parser) if args.compression and args.compression != "none" else None
    if comps is not None:
        from llava.compression.in_llm import llm_stage

        if llm_stage(comps[0][1]) is None:  # a vision-stage method: the uniform rows, under its name
            comps, args.method = None, args.compression
    for geom in geoms:
        if comps is None:
            rows += efficiency_table(
                geom, args.ratios, base_tokens=base, tokens=args.tokens, text_tokens=args.text_tokens,
                accelerators=accels, kv_bytes=args.kv_bytes, causal=args.causal, method=args.method,
                paper=args.paper,
            )  # fmt: skip
            continue
        if args.tokens:
            parser.error("--tokens gives uniform counts; in-LLM methods compute their per-layer counts from --ratios")
        rows += efficiency_table(geom, [1.0], base_tokens=base, text_tokens=args.text_tokens, accelerators=accels,
                                 kv_bytes=args.kv_bytes, causal=args.causal, paper=args.paper)
        try:
            rows += in_llm_table(geom, [c for c in comps if c[0] != 1.0], base_tokens=base,
                                 text_tokens=args.text_tokens, accelerators=accels, kv_bytes=args.kv_bytes,
                                 causal=args.causal, paper=args.paper)
        except ValueError as e:  # e.g. SparseVLM with an explicit λ: counts depend on the data
            parser.error(str(e))
    if args.json:
        json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if args.image_size:
        print(
            f"Image {args.image_size[0]}x{args.image_size[1]}: {base} LLaVA-NeXT visual tokens (v1.6 AnyRes)"
        )
    elif args.frames is not None:
        print(f"Video: {args.frames} frames x {args.tokens_per_frame} tokens = {base} visual tokens, T = floor(R x {base})")
    else:
        print(f"Nominal protocol: T = R x {NOMINAL_TOKENS} visual tokens")
    print(render_main_table(rows))
    if args.paper:
        aaai = aaai_rows(geoms, base, args.text_tokens)
        if aaai:
            print()
            print("Paper (AAAI version, LLaVA-NeXT-7B, R = 10 %; uncompressed R = 1): TFLOPs and GPU memory as "
                  "published, beside this tool's TFLOPs at the methods' default settings (summed layer by layer "
                  "for the in-LLM ones; their first layers see every token)")
            print(render_aaai_table(aaai))
        print()
        compared = [r for r in rows if r.get("paper_prefill_ms") is not None]
        if not compared:
            print("--paper: no row is under the paper's protocol (LLaVA-NeXT-7B/13B, T = R x 2880, no text).")
            return 0
        print("Paper (Tables VI/VII) vs this tool; flash/unfused: this tool's roofline; LLM-Viewer@: the "
              "paper's setting (unfused, LLM-Viewer accounting) at 312 TFLOP/s")  # fmt: skip
        print(render_paper_table(compared))
        print()
        for line in PAPER_NOTE:
            print(line)
        seen: set[str] = set()
        for geom in geoms:
            key = paper_key(geom)
            if key and key not in seen and any(r["model"] == geom.name for r in compared):
                seen.add(key)
                print()
                for line in paper_explanation(geom, accels[0]):
                    print(line)
    return 0
