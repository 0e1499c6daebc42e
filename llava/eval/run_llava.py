"""Ask a LLaVA model about one image.

``python -m llava.eval.run_llava --model-path DIR --image-file IMG --query "..."``
with any of the compression flags (``--compression globalcom2 --retention-ratio 0.25``).
``--stats`` prints the visual token count (before/after compression), the per-crop budgets,
the tokens each LLM layer processed and the prefill FLOPs per stage (uncompressed, after the
vision stage, overall with an in-LLM stage), and the time of each stage to stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from llava.analysis.efficiency.formulas import profile_runs
from llava.analysis.efficiency.tables import runs_text
from llava.compression.cli import add_compression_args, compressor_from_args
from llava.conversation import build_chat_prompt, conv_templates, default_conv_mode
from llava.eval.runs.flags import add_sampling_args
from llava.mm_utils import get_model_name_from_path, load_image, process_images, tokenizer_image_token
from llava.model.builder import DTYPES, load_pretrained_model
from llava.utils import input_device, synchronize


class _FirstTokenClock(StoppingCriteria):
    """Records when the first new token exists (end of prefill); never stops anything."""

    def __init__(self, device):
        self.device, self.first = device, None

    def __call__(self, input_ids, scores, **kwargs):
        if self.first is None:
            synchronize(self.device)
            self.first = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def eval_model(args) -> str:
    files = [f for f in re.split(re.escape(args.sep), args.image_file) if f]
    if not files:
        raise ValueError(f"--image-file {args.image_file!r} names no image")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    t1 = time.perf_counter()
    images = [load_image(f) for f in files]  # before the model: a bad file costs nothing
    t_read = time.perf_counter() - t1
    t0 = time.perf_counter()
    model_name = args.model_name or get_model_name_from_path(args.model_path)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path, args.model_base, model_name, device=args.device, compressor=compressor_from_args(args),
        attn_implementation=args.attn_implementation, dtype=args.dtype,
    )
    t_load = time.perf_counter() - t0
    conv_mode = default_conv_mode(model_name)
    if args.conv_mode is not None and args.conv_mode != conv_mode:
        print(f"[WARNING] the auto inferred conversation mode is {conv_mode}, while `--conv-mode` is "
              f"{args.conv_mode}, using {args.conv_mode}", file=sys.stderr)
        conv_mode = args.conv_mode
    prompt = build_chat_prompt(args.query, model.config, conv_mode)

    t1 = time.perf_counter()
    image_sizes = [im.size for im in images]
    images_tensor = process_images(images, image_processor, model.config, device=input_device(model), dtype=model.dtype)
    input_ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt").unsqueeze(0).to(input_device(model))
    t_pre = time.perf_counter() - t1 + t_read

    model.record_timings, model.stage_times = args.stats, {}
    clock = _FirstTokenClock(input_device(model))
    t2 = time.perf_counter()
    output_ids = model.generate(
        input_ids, images=images_tensor, image_sizes=image_sizes,
        do_sample=args.temperature > 0, temperature=args.temperature if args.temperature > 0 else None,
        top_p=args.top_p, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, use_cache=True,
        stopping_criteria=StoppingCriteriaList([clock]), pad_token_id=tokenizer.pad_token_id,
    )
    t_end = time.perf_counter()
    text = tokenizer.batch_decode(output_ids, skip_special_tokens=True)[0].strip()
    print(text)
    if args.stats:
        st = model.stage_times
        n_new = int(output_ids.shape[1])
        prefill = (clock.first or t_end) - t2 - st.get("vision", 0) - st.get("compression", 0)
        images_info = [im.info() for im in model.last_images]
        from llava.analysis.efficiency import LLMGeometry, stage_report

        geom = LLMGeometry.from_config(model.config.to_dict(), name=model_name)
        text_tokens = int(input_ids.shape[1]) - len(images_info)
        report = {
            "images": images_info,
            "compression": model.compressor.to_dict() if model.compressor else {"name": "none"},
            "prefill": stage_report(geom, text_tokens, images_info),
            "timings_ms": {
                "load": 1e3 * t_load, "preprocess": 1e3 * t_pre,
                "vision_tower": 1e3 * st.get("vision", 0.0), "compression": 1e3 * st.get("compression", 0.0),
                "llm_prefill": 1e3 * prefill,
                "decode_per_token": 1e3 * (t_end - (clock.first or t_end)) / max(n_new - 1, 1),
                "generate_total": 1e3 * (t_end - t2),
            },
            "new_tokens": n_new,
        }
        emit_stats(report, format_stats(report), args.stats_json)
    return text


def emit_stats(report: dict, text: str, json_path: str | None) -> None:
    """``--stats``: ``text`` to stderr and, with ``--stats-json``, ``report`` to that file."""
    print(text, file=sys.stderr)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)


def format_stats(report: dict) -> str:
    lines = [f"compression: {json.dumps(report['compression'])}"]
    for i, info in enumerate(report["images"]):
        lines.append(
            f"image {i}: grid {info['grid'][0]}x{info['grid'][1]}, visual tokens "
            f"{info['tokens_uncompressed']} -> {info['tokens']} "
            f"({100.0 * info['tokens'] / info['tokens_uncompressed']:.1f}%), thumbnail kept {info['thumbnail_kept']}"
        )
        if "budgets" in info:
            lines.append("  crop budgets r_j: " + ", ".join(f"{b:.3f}" for b in info["budgets"]))
        lines.append("  crop tokens kept: " + ", ".join(str(k) for k in info["crop_kept"]))
        if "llm" in info:
            llm = info["llm"]
            lines.append(f"  in-LLM stage ({llm['method']}, drops before layers {llm['drop_layers']}): "
                         f"visual tokens per layer {runs_text(profile_runs(llm['tokens_per_layer']))}")
    if "prefill" in report:
        p = report["prefill"]
        layers = runs_text(p["runs"])
        lines.append(f"prefill sequence tokens per layer: {layers} (uncompressed {p['tokens']['uncompressed']})")
        tf = p["tflops"]
        lines.append(f"prefill TFLOPs: uncompressed {tf['uncompressed']:.3g}, after the vision stage "
                     f"{tf['vision_stage']:.3g}, overall {tf['overall']:.3g}")
    lines.append("timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings_ms"].items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", required=True, help="local checkpoint folder")
    ap.add_argument("--model-base", default=None)
    ap.add_argument("--model-name", default=None, help="defaults to the folder name")
    ap.add_argument("--image-file", required=True, help="image path(s), separated by --sep")
    ap.add_argument("--query", required=True)
    ap.add_argument("--conv-mode", default=None, choices=sorted(conv_templates),
                    help="conversation template (default: from the model name, as the original run_llava)")
    ap.add_argument("--sep", default=",")
    add_generation_args(ap, temperature=0.2, max_new_tokens=512, stats="token counts, crop budgets and stage timings")
    ap.add_argument("--attn-implementation", default=None, choices=["sdpa", "flash_attention_2", "eager"])
    add_compression_args(ap)
    return ap


def add_generation_args(ap: argparse.ArgumentParser, *, temperature: float, max_new_tokens: int, stats: str) -> None:
    """The sampling, device, dtype and ``--stats`` flags of the one-shot CLIs (run_llava,
    run_video); ``stats`` says what ``--stats`` prints."""
    add_sampling_args(ap, temperature=temperature, max_new_tokens=max_new_tokens)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cuda (every visible GPU, device_map=auto), cuda:N, cpu or mps; a missing device is an error")
    ap.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                    help="weights dtype (default float16 on CUDA, float32 elsewhere; use bf16 for a 7B on CPU)")
    ap.add_argument("--stats", action="store_true", help=f"print {stats}")
    ap.add_argument("--stats-json", default=None, help="also write the stats to this JSON file")


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        eval_model(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: one line, no traceback
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
