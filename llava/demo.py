"""``make demo``: GlobalCom² at work on tiny random models, fully offline.

Writes a tiny original-format checkpoint (``checkpoints/tiny-llava-v1.6``) and a synthetic
1000×600 picture, then asks the model about it without compression and with GlobalCom² at
``R = 0.25``, printing the visual tokens before/after, the per-crop budgets and the time of
each stage. Then the same picture through transformers' own classes with :mod:`llava.hf`: a
tiny LLaVA-OneVision (real 27×27 SigLIP views, ``anyres_max_9``) and a tiny Qwen2-VL, with
``llava.hf.generate`` and with the stock ``model.generate`` after ``llava.hf.install``
(fixed-count budgets). Last, a 16-frame clip (written with PyAV) through a tiny OneVision
checkpoint with ``run_video``, uncompressed and with GlobalCom²'s frame budgets. The weights
are random: the answer text is noise, the mechanics are real.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from llava.eval import run_llava
from llava.testing.tiny_checkpoint import write_tiny_checkpoint


def demo_image(path: str, size=(1000, 600)) -> str:
    """A deterministic picture with a few shapes on a gradient."""
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    arr = np.concatenate([40 + 120 * x + 0 * y, 60 + 100 * y + 0 * x, 160 - 80 * x * y], axis=2)
    im = Image.fromarray(arr.astype(np.uint8))
    d = ImageDraw.Draw(im)
    d.ellipse((120, 140, 380, 400), fill=(230, 40, 40))
    d.rectangle((600, 80, 900, 260), fill=(250, 220, 30))
    d.polygon([(620, 520), (760, 320), (900, 520)], fill=(30, 120, 230))
    im.save(path)
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="checkpoints", help="where the tiny checkpoint and image go")
    ap.add_argument("--ratio", type=float, default=0.25, help="GlobalCom² retention ratio")
    args = ap.parse_args(argv)
    ckpt = os.path.join(args.out, "tiny-llava-v1.6")
    if not os.path.isfile(os.path.join(ckpt, "config.json")):
        write_tiny_checkpoint(ckpt)
        print(f"wrote tiny checkpoint {ckpt}")
    image = demo_image(os.path.join(args.out, "demo.png"))
    print("The model's weights are random: its answers are noise; the token counts, budgets and timings are real.")
    common = ["--model-path", ckpt, "--image-file", image, "--query", "What is in the picture?",
              "--temperature", "0", "--max-new-tokens", "16", "--stats", "--device", "cpu"]
    runs = [
        ("uncompressed", []),
        (f"GlobalCom² R={args.ratio}", ["--compression", "globalcom2", "--retention-ratio", str(args.ratio)]),
        (f"GlobalCom² R={args.ratio}, the release's token layout",
         ["--compression", "globalcom2", "--retention-ratio", str(args.ratio), "--layout", "reference"]),
        (f"FasterVLM R={args.ratio}", ["--compression", "fastervlm", "--retention-ratio", str(args.ratio)]),
    ]
    for title, extra in runs:
        print(f"\n=== {title} ===", flush=True)
        run_llava.main(common + extra)
    hf_demo(image, args.ratio)
    video_demo(args.out, args.ratio)


def hf_demo(image_path: str, ratio: float) -> None:
    """GlobalCom² on transformers' LLaVA-OneVision and Qwen2-VL classes via :mod:`llava.hf`."""
    import llava.hf
    from llava.compression import build_compressor
    from llava.testing.tiny_hf import llava_prompt, qwen_prompt, tiny_onevision, tiny_qwen2_vl

    image = Image.open(image_path).convert("RGB")
    for title, (model, processor), prompt in [
        ("LLaVA-OneVision (transformers' class, 384-px SigLIP views of 27×27 tokens)", tiny_onevision(image_size=384),
         llava_prompt("What is in the picture?")),
        ("Qwen2-VL (transformers' class, 2×2-merged dynamic-resolution grid)", tiny_qwen2_vl(max_tokens=1024),
         qwen_prompt("What is in the picture?")),
    ]:
        print(f"\n=== {title} ===", flush=True)
        inputs = processor(images=[image], text=[prompt], return_tensors="pt")
        comp = build_compressor("globalcom2", retention_ratio=ratio)
        with torch.no_grad():
            for name, c in [("uncompressed", None), (f"GlobalCom² R={ratio}", comp)]:
                t0 = time.perf_counter()
                out, records = llava.hf.generate(model, c, **inputs, max_new_tokens=8, return_records=True)
                dt = time.perf_counter() - t0
                info = records[0].info()
                print(f"{name}: visual tokens {info['tokens_uncompressed']} -> {info['tokens']}"
                      f" (thumbnail kept {info['thumbnail_kept']}, grid {info['grid']}, "
                      f"{'canvas ' + str(info['canvas']) if 'canvas' in info else 'view ' + str(info['view'])})"
                      f"; 8 new tokens in {dt:.2f} s")
                if "budgets" in info:
                    print(f"  per-crop budgets r_j: {', '.join(f'{b:.3f}' for b in info['budgets'])}")
                    print(f"  per-crop kept: {info['crop_kept']}")
            exact = build_compressor("globalcom2", retention_ratio=ratio, budget="exact")
            llava.hf.install(model, processor, exact)
            try:
                short = processor(images=[image], text=[prompt], return_tensors="pt")
                n = int((short["input_ids"] == model.config.image_token_id).sum())
                model.generate(**short, max_new_tokens=8)
                print(f"llava.hf.install (budget='exact'): the stock processor emits {n} image tokens and the "
                      f"stock model.generate runs on them")
            finally:
                llava.hf.uninstall(model, processor)


def demo_video(path: str, frames: int = 16, size=(320, 192)) -> str:
    """A deterministic clip (PyAV, mpeg4): the demo picture's shapes, the red disc moving right."""
    import av

    w, h = size
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            im = Image.new("RGB", size, (60, 90, 140))
            d = ImageDraw.Draw(im)
            d.rectangle((200, 20, 300, 80), fill=(250, 220, 30))
            x = 20 + 12 * i
            d.ellipse((x, 90, x + 70, 160), fill=(230, 40, 40))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.asarray(im), format="rgb24")))
        container.mux(stream.encode())
    return path


def video_demo(out_dir: str, ratio: float) -> None:
    """GlobalCom² on a video: a tiny LLaVA-OneVision checkpoint (384-px frames pooled to 14×14)
    asked about a 16-frame clip with ``run_video`` (8 frames sampled)."""
    from llava.eval import run_video
    from llava.testing.tiny_hf import save_checkpoint, tiny_onevision

    ckpt = os.path.join(out_dir, "tiny-onevision-hf")
    if not os.path.isfile(os.path.join(ckpt, "config.json")):
        save_checkpoint(*tiny_onevision(image_size=384), ckpt)
    clip = demo_video(os.path.join(out_dir, "demo.mp4"))
    common = ["--model-path", ckpt, "--video-file", clip, "--query", "What moves?", "--num-frames", "8",
              "--max-new-tokens", "8", "--stats", "--device", "cpu"]
    for title, extra in [
        ("video, LLaVA-OneVision, uncompressed", []),
        (f"video, GlobalCom² R={ratio} (frame budgets from the global video representation)",
         ["--compression", "globalcom2", "--retention-ratio", str(ratio)]),
    ]:
        print(f"\n=== {title} ===", flush=True)
        run_video.main(common + extra)


if __name__ == "__main__":
    main()
