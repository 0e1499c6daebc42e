"""Peak memory of the checkpoint converter (``python -m llava.convert``), measured.

``python -m benchmarks.convert_memory`` writes, in a temporary folder, a random fp16
checkpoint in the original LLaVA-NeXT format with 7B layer shapes but few layers (LLM hidden
4096, MLP 11008, 32 heads, ``--layers`` decoder layers, 32000 × 4096 embeddings and LM head, a
32000-piece SentencePiece tokenizer; a CLIP-L/14-336-wide tower of ``--vision-layers`` layers;
the 2-layer projector), sharded into ``--input-shard-size`` GiB files. For each
``--max-shard-size`` it then runs, each in its own process:

* ``to-hf`` original → llava-hf;
* ``to-original`` on that llava-hf folder (its ``conversion_source/`` removed first, so it
  takes the path of a published llava-hf folder, not the lossless way back).

It reports each process's peak RSS (``ru_maxrss`` from ``wait4``, exact), the peaks of its
anonymous and file-backed resident memory (``RssAnon``/``RssFile`` polled from ``/proc`` every
10 ms: file-backed pages are the memory-mapped input shards, which the kernel can drop), the
same against the checkpoint's size and the peak RSS of a Python process that only imports
torch and transformers. Linux only. Disk use: about twice the checkpoint (the source is deleted
before ``to-original`` runs); everything is removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

# Module level imports the standard library only: ``--launch`` runs in a small process (see
# measure()), torch and the project are imported where the checkpoint is built and reported.

GIB = 1024**3
VOCAB = 32000
LLM_7B_SHAPE = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32)
BASELINE_CODE = "import torch, transformers"


# ----------------------------------------------------------------------------- the checkpoint


def sentencepiece_32k() -> bytes:
    """A 32000-piece SentencePiece model (Llama's vocabulary size), trained on random words."""
    import random
    import string

    from llava.testing.tiny_checkpoint import sentencepiece_model

    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(60000)]
    return sentencepiece_model(VOCAB, [" ".join(words[i : i + 20]) for i in range(0, len(words), 20)])


def write_checkpoint(out_dir: str, layers: int, vision_layers: int, shard_gib: float, seed: int = 0) -> int:
    """Write the random original-format checkpoint; returns the bytes of its weight files."""
    import torch
    from transformers import CLIPVisionConfig

    from llava.convert import ShardWriter, weight_files
    from llava.model import LlavaConfig, LlavaLlamaForCausalLM
    from llava.model.multimodal_encoder.builder import default_processor_settings, vision_config_dict
    from llava.testing.tiny_checkpoint import tiny_config, to_original_names, write_tokenizer

    from .profiles import CLIP_L_336

    raw = {**tiny_config("llama", VOCAB), **LLM_7B_SHAPE, "num_hidden_layers": layers, "mm_hidden_size": 1024,
           "torch_dtype": "float16"}  # fmt: skip
    vision = vision_config_dict(CLIPVisionConfig(**{**CLIP_L_336, "num_hidden_layers": vision_layers}))
    tower = os.path.join(out_dir, "clip_vision_tower")
    os.makedirs(tower, exist_ok=True)
    for path, obj in ((os.path.join(out_dir, "config.json"), raw), (os.path.join(tower, "config.json"), vision),
                      (os.path.join(tower, "preprocessor_config.json"), default_processor_settings(336))):  # fmt: skip
        with open(path, "w") as f:
            json.dump(obj, f, indent=2)
    write_tokenizer(out_dir, sp_model=sentencepiece_32k())

    config = LlavaConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "model_type")})
    config.mm_vision_config = vision
    with torch.device("meta"):  # names and shapes only
        shapes = {k: v.shape for k, v in to_original_names(LlavaLlamaForCausalLM(config).state_dict()).items()}
    gen = torch.Generator().manual_seed(seed)
    writer = ShardWriter(out_dir, int(shard_gib * GIB))
    for name, shape in shapes.items():
        writer.add(name, torch.empty(shape, dtype=torch.float16).normal_(0.0, 0.02, generator=gen))
    writer.close()
    return sum(os.path.getsize(p) for p in weight_files(out_dir))


# ----------------------------------------------------------------------------- measuring a process


def _proc_status(pid: int) -> dict[str, int]:
    """``VmRSS``/``RssAnon``/``RssFile`` of a live process, in KiB (empty once it has exited)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def measure(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd`` under a small launcher process (``--launch``) and return what it saw.

    Linux charges a new program the peak RSS of the process it was exec'd from (``exec``
    records the old address space's high-water mark in ``ru_maxrss``): started straight from
    this process, which held the checkpoint it wrote, every child would report at least this
    process's RSS. The launcher imports the standard library only (a few MB, the same in the
    baseline and in every conversion).
    """
    launcher = [sys.executable, "-m", "benchmarks.convert_memory", "--launch", *cmd]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(launcher, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def watch(cmd: list[str], interval: float = 0.01) -> dict[str, Any]:
    """Run ``cmd``; its exact peak RSS (``wait4``'s ``ru_maxrss``), polled RssAnon/RssFile
    peaks, wall time and stdout. Raises if it fails."""
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # no pipe to fill up
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
    peaks = {"RssAnon": 0, "RssFile": 0}
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        for key, value in _proc_status(proc.pid).items():
            if key in peaks:
                peaks[key] = max(peaks[key], value)
        time.sleep(interval)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not by Popen
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read(), err.read()
    out.close()
    err.close()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{stderr[-2000:]}")
    return {
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # KiB on Linux
        "peak_rss_anon_bytes": peaks["RssAnon"] * 1024,
        "peak_rss_file_bytes": peaks["RssFile"] * 1024,
        "seconds": seconds,
        "stdout": stdout.strip(),
    }


def convert(direction: str, src: str, dst: str, max_shard_gib: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "llava.convert", direction, src, dst, "--max-shard-size", str(max_shard_gib)]
    return {"direction": direction, "max_shard_gib": max_shard_gib, **measure(cmd)}


# ----------------------------------------------------------------------------- driver


def run(args) -> dict[str, Any]:
    import torch

    from .common import environment

    baseline = measure([sys.executable, "-c", BASELINE_CODE])
    runs: list[dict[str, Any]] = []
    ckpt_bytes = 0
    root = tempfile.mkdtemp(prefix="convert-memory-", dir=args.workdir)
    try:
        for shard in args.max_shard_size:
            src, hf, back = (os.path.join(root, f"{n}-{shard:g}") for n in ("original", "hf", "original-back"))
            t0 = time.perf_counter()
            ckpt_bytes = write_checkpoint(src, args.layers, args.vision_layers, args.input_shard_size)
            print(f"wrote a {ckpt_bytes / 1e9:.2f} GB checkpoint in {time.perf_counter() - t0:.0f} s", flush=True)
            runs.append(convert("to-hf", src, hf, shard))
            shutil.rmtree(src)
            shutil.rmtree(os.path.join(hf, "conversion_source"))
            runs.append(convert("to-original", hf, back, shard))
            for r in runs[-2:]:
                print(f"  {r['direction']} (--max-shard-size {shard:g}): peak RSS "
                      f"{r['peak_rss_bytes'] / 1e9:.2f} GB, {r['seconds']:.0f} s", flush=True)  # fmt: skip
            if not args.keep:
                shutil.rmtree(hf)
                shutil.rmtree(back)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    for r in runs:
        r["peak_over_baseline_bytes"] = r["peak_rss_bytes"] - baseline["peak_rss_bytes"]
        r["peak_rss_over_checkpoint"] = r["peak_rss_bytes"] / ckpt_bytes
        r["over_baseline_over_checkpoint"] = r["peak_over_baseline_bytes"] / ckpt_bytes
    return {
        "environment": environment(torch.device("cpu")),
        "checkpoint": {
            "bytes": ckpt_bytes, "llm_layers": args.layers, "vision_layers": args.vision_layers,
            "input_shard_gib": args.input_shard_size, "dtype": "float16", **LLM_7B_SHAPE, "vocab_size": VOCAB,
        },  # fmt: skip
        "baseline": {"code": BASELINE_CODE, **baseline},
        "runs": runs,
        "keep": root if args.keep else None,
    }


def report(result: dict[str, Any]) -> str:
    from .common import format_table

    gb = 1e9
    ck = result["checkpoint"]
    base = result["baseline"]["peak_rss_bytes"]
    head = (
        f"checkpoint: {ck['bytes'] / gb:.2f} GB fp16 ({ck['llm_layers']} LLM layers 4096/11008, 32000x4096 "
        f"embeddings + LM head, {ck['vision_layers']} CLIP-L layers; {ck['input_shard_gib']:g} GiB input shards)\n"
        f"baseline ({result['baseline']['code']}): peak RSS {base / gb:.2f} GB"
    )
    rows = [
        [r["direction"], r["max_shard_gib"], r["peak_rss_bytes"] / gb, r["peak_rss_anon_bytes"] / gb,
         r["peak_rss_file_bytes"] / gb, r["peak_over_baseline_bytes"] / gb, r["peak_rss_over_checkpoint"],
         r["over_baseline_over_checkpoint"], r["seconds"]]
        for r in result["runs"]
    ]  # fmt: skip
    headers = ["direction", "shard GiB", "peak RSS GB", "anon GB", "file GB", "- baseline GB",
               "RSS/ckpt", "(RSS-base)/ckpt", "s"]  # fmt: skip
    return head + "\n" + format_table(headers, rows)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--launch"]:  # internal: watch one command, print JSON (see measure())
        print(json.dumps(watch(argv[1:])))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4, help="LLM decoder layers (default 4; 7B has 32)")
    ap.add_argument("--vision-layers", type=int, default=4, help="CLIP tower layers (default 4; CLIP-L has 24)")
    ap.add_argument("--input-shard-size", type=float, default=1.0, help="GiB per input file (default 1)")
    ap.add_argument("--max-shard-size", type=float, nargs="+", default=[2.0, 0.5],
                    help="the converter's output shard sizes to measure, GiB (default: 2 (its default) 0.5)")
    ap.add_argument("--workdir", default=None, help="where the temporary folder goes (default: the system's)")
    ap.add_argument("--keep", action="store_true", help="keep the converted folders")
    ap.add_argument("--out", default="benchmarks/results/convert_memory.json", help="JSON output")
    args = ap.parse_args(argv)
    if not sys.platform.startswith("linux"):
        raise SystemExit("error: this benchmark reads /proc and wait4's ru_maxrss (Linux only)")
    from .common import write_json

    result = run(args)
    print(report(result))
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
