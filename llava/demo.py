"""``make demo``: GlobalCom² at work on a tiny random LLaVA-NeXT, fully offline.

Writes a tiny original-format checkpoint (``checkpoints/tiny-llava-v1.6``) and a synthetic
1000×600 picture, then asks the model about it without compression and with GlobalCom² at
``R = 0.25``, printing the visual tokens before/after, the per-crop budgets and the time of
each stage. The model's weights are random: the answer text is noise, the mechanics are real.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
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


if __name__ == "__main__":
    main()
