"""The command line every generation driver shares, and the checks that need no model: a bad
flag is a one-line error before the question file is even read."""

from __future__ import annotations

import argparse
import math
import os

from llava.compression.cli import add_compression_args

from .errors import RunError

DTYPES = ("auto", "float32", "float16", "bfloat16")


def add_sampling_args(ap: argparse.ArgumentParser, *, temperature: float, max_new_tokens: int) -> None:
    """``--temperature`` (0 = greedy), ``--top-p``, ``--num-beams``, ``--max-new-tokens``, with
    the original scripts' underscore spellings too — for the drivers and the one-shot CLIs."""
    ap.add_argument("--temperature", type=float, default=temperature, help=f"0 = greedy (default {temperature})")
    ap.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=None)
    ap.add_argument("--num_beams", "--num-beams", dest="num_beams", type=int, default=1)
    ap.add_argument("--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int, default=max_new_tokens)


def build_parser(description: str | None, *, max_new_tokens: int = 128) -> argparse.ArgumentParser:
    """The flags every driver takes (the original LLaVA eval scripts' names) + compression."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", required=True, help="local checkpoint folder")
    ap.add_argument("--model-base", default=None)
    ap.add_argument("--model-name", default=None,
                    help="name recorded as model_id and in config.json (default: the checkpoint folder's name)")
    ap.add_argument("--question-file", required=True)
    ap.add_argument("--image-folder", default="", help="folder the question file's image paths are relative to")
    ap.add_argument("--answers-file", required=True)
    ap.add_argument("--conv-mode", default="vicuna_v1")
    add_sampling_args(ap, temperature=0.0, max_new_tokens=max_new_tokens)
    ap.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=1,
                    help="questions per generate call (left-padded; same answers as 1)")
    ap.add_argument("--num-chunks", "--num_chunks", dest="num_chunks", type=int, default=1)
    ap.add_argument("--chunk-idx", "--chunk_idx", dest="chunk_idx", type=int, default=0)
    ap.add_argument("--device", default=None, help="default: cuda (this rank's GPU) if available, else cpu")
    ap.add_argument("--dtype", default=None, choices=DTYPES,
                    help="weights dtype (default: float16 on CUDA, as the original scripts, float32 on CPU; "
                         "auto = the checkpoint's torch_dtype)")
    ap.add_argument("--attn-implementation", default=None, choices=["sdpa", "flash_attention_2", "eager"])
    ap.add_argument("--keep-errors", action="store_true",
                    help="on resume, keep the questions recorded as errors (default: ask them again)")
    ap.add_argument("--overwrite", action="store_true", help="discard existing answers instead of resuming")
    ap.add_argument("--force", action="store_true",
                    help="resume although the answers file has no config record, or was made from another "
                         "question file or image folder (never across models or settings)")
    add_compression_args(ap)
    return ap


def same_path(a: str, b: str) -> bool:
    """Whether two paths name the same file (through symlinks and relative parts)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_args(args: argparse.Namespace) -> None:
    """Everything about the flags that can be checked without the model or the data."""
    from llava.conversation import conv_templates

    if args.max_new_tokens < 1:
        raise RunError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.batch_size < 1:
        raise RunError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.num_beams < 1:
        raise RunError(f"--num-beams must be >= 1, got {args.num_beams}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise RunError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise RunError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.num_chunks < 1 or not 0 <= args.chunk_idx < args.num_chunks:
        raise RunError(f"need 0 <= --chunk-idx < --num-chunks, got {args.chunk_idx} / {args.num_chunks}")
    if args.conv_mode not in conv_templates:
        raise RunError(f"unknown --conv-mode {args.conv_mode!r}; valid: {', '.join(sorted(conv_templates))}")
    if args.image_folder and not os.path.isdir(args.image_folder):
        raise RunError(f"--image-folder not found: {args.image_folder}")
    answers = args.answers_file
    if os.path.isdir(answers):
        raise RunError(f"--answers-file {answers} is a directory")
    if os.path.exists(args.question_file) and same_path(answers, args.question_file):
        raise RunError(f"--answers-file {answers} is the question file; write the answers elsewhere")
    if os.path.basename(os.path.realpath(answers)) == "config.json":
        raise RunError(f"--answers-file {answers}: config.json is the run's configuration record; use another name")
    resolve_device(args.device)


def resolve_device(device: str | None, local_rank: int = 0, world: int = 1) -> str:
    """``--device`` as a torch device string; a device this machine does not have (``cuda``
    without CUDA) is an error, not a fall-back (:func:`llava.model.builder.check_device`)."""
    import torch

    from llava.model.builder import check_device

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        check_device(device)
    except ValueError as e:
        raise RunError(f"--device {device}: {e}") from None
    if device == "cuda" and world > 1:
        device = f"cuda:{local_rank}"
    return device


def resolve_dtype(dtype: str | None, device: str, model_path: str) -> str:
    """``--dtype`` resolved by :func:`llava.model.builder.run_dtype` (``auto``: the checkpoint's)."""
    from llava.model.builder import run_dtype

    try:
        return run_dtype(dtype, device, model_path, flag="--dtype")
    except ValueError as e:
        raise RunError(str(e)) from None


__all__ = ["DTYPES", "build_parser", "check_args", "resolve_device", "resolve_dtype", "same_path"]
