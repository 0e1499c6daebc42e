"""Ask a video model (transformers' LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL) about one video file.

``python -m llava.eval.run_video --model-path DIR --video-file clip.mp4 --query "..." --num-frames 8``
with any of the compression flags (``--compression globalcom2 --retention-ratio 0.25``). The
frames are sampled uniformly with the model's own rule and read with PyAV; without torchvision
the processor's video part is :class:`llava.hf.video.VideoProcessor`. ``--stats`` prints the
visual token count before/after compression, every frame's budget r_f and kept count, and the
time of each stage to stderr.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from llava.compression.cli import add_compression_args, compressor_from_args
from llava.eval.run_llava import add_generation_args, emit_stats
from llava.model.builder import DTYPES, check_device
from llava.utils import input_device


def load_model(model_path: str, device: str, dtype: str | None):
    """transformers' own class for the checkpoint (``AutoModelForImageTextToText``), on ``device``."""
    from transformers import AutoModelForImageTextToText

    check_device(device)  # a device that is not here is an error, never a silent fall-back to CPU
    torch_dtype = DTYPES[dtype] if dtype is not None else (torch.float16 if device.startswith("cuda") else torch.float32)
    device_map = "auto" if device == "cuda" else device
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch_dtype, device_map=device_map)
    return model.eval()


def build_prompt(processor, query: str) -> str:
    """The checkpoint's chat template with one video before the question; without a template, the
    ChatML turn both families are trained on."""
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": query}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    video = ("<|vision_start|><|video_pad|><|vision_end|>" if "Qwen" in type(processor).__name__
             else f"{processor.video_token}\n")
    return f"<|im_start|>user\n{video}{query}<|im_end|>\n<|im_start|>assistant\n"


def read_frames(processor, path: str, num_frames: int):
    """``num_frames`` frames sampled with the processor's own rule (``sample_frames``)."""
    from llava.hf.video import read_video

    sampler = processor.video_processor.sample_frames
    return read_video(path, sample_indices_fn=lambda metadata: sampler(metadata=metadata, num_frames=num_frames))


def eval_model(args) -> str:
    import llava.hf
    from llava.hf.processors import load_processor

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.num_frames < 1:
        raise ValueError(f"--num-frames must be at least 1, got {args.num_frames}")
    comp = compressor_from_args(args)
    t0 = time.perf_counter()
    processor = load_processor(args.model_path)
    frames, metadata = read_frames(processor, args.video_file, args.num_frames)  # before the model: a bad file costs nothing
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = load_model(args.model_path, args.device, args.dtype)
    llava.hf.adapter_for(model)  # a model class llava.hf does not serve is an error now
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    inputs = processor(videos=[frames], video_metadata=[metadata], text=[build_prompt(processor, args.query)],
                       return_tensors="pt").to(input_device(model))
    t_pre = time.perf_counter() - t0
    gen = dict(do_sample=args.temperature > 0, temperature=args.temperature if args.temperature > 0 else None,
               top_p=args.top_p, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)
    with torch.inference_mode():
        t0 = time.perf_counter()
        kwargs, records = llava.hf.prepare_inputs(model, comp, **inputs)
        t_prepare = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(**kwargs, **gen)
        t_gen = time.perf_counter() - t0
    new = out[:, kwargs["input_ids"].shape[1] :]
    text = processor.batch_decode(new, skip_special_tokens=True)[0].strip()
    print(text)
    if args.stats:
        report = {
            "video": {"file": args.video_file, "frames_sampled": len(frames),
                      "frame_indices": [int(i) for i in metadata.frames_indices], "fps": metadata.fps},
            "records": [r.info() for r in records],
            "compression": llava.hf.resolved_config(model, comp),
            "timings_ms": {"read_and_processor": 1e3 * t_read, "load": 1e3 * t_load, "preprocess": 1e3 * t_pre,
                           "vision_and_compression": 1e3 * t_prepare, "generate": 1e3 * t_gen},
            "new_tokens": int(new.shape[1]),
        }
        emit_stats(report, format_stats(report), args.stats_json)
    return text


def format_stats(report: dict) -> str:
    v = report["video"]
    lines = [f"compression: {json.dumps(report['compression'])}",
             f"video: {v['file']}, {v['frames_sampled']} frames sampled (indices {v['frame_indices']})"]
    for i, info in enumerate(report["records"]):
        kind = "video" if "frames" in info else "image"
        lines.append(f"{kind} {i}: visual tokens {info['tokens_uncompressed']} -> {info['tokens']} "
                     f"({100.0 * info['tokens'] / info['tokens_uncompressed']:.1f}%)")
        if kind == "video":
            rows, cols = info["frame_shape"]
            lines.append(f"  {info['frames']} frames of {rows}x{cols} tokens")
            if "budgets" in info:
                lines.append("  frame budgets r_f: " + ", ".join(f"{b:.3f}" for b in info["budgets"]))
            lines.append("  frame tokens kept: " + ", ".join(str(k) for k in info["frame_kept"]))
    lines.append("timings (ms): " + ", ".join(f"{k} {t:.1f}" for k, t in report["timings_ms"].items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m llava.eval.run_video", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", required=True, help="local transformers checkpoint folder (OneVision, Qwen2-VL, Qwen2.5-VL)")
    ap.add_argument("--video-file", required=True, help="a video file PyAV can read (mp4, webm, avi, ...)")
    ap.add_argument("--query", required=True)
    ap.add_argument("--num-frames", type=int, default=8,
                    help="frames sampled uniformly (default 8; Qwen rounds to a multiple of its temporal patch, 2)")
    add_generation_args(ap, temperature=0.0, max_new_tokens=128, stats="token counts, per-frame budgets and stage timings")
    add_compression_args(ap)
    return ap


def main(argv=None) -> str:
    args = build_parser().parse_args(argv)
    try:
        return eval_model(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: one line, no traceback
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
