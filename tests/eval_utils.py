"""Helpers shared by the generation-driver tests (test_eval_generation.py, test_eval_runs.py)."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# Generation flags of every driver test: 3 new tokens, GlobalCom² at R = 0.25.
FAST = ["--max-new-tokens", "3", "--compression", "globalcom2", "--retention-ratio", "0.25"]
# Different sizes on purpose: 2- and 3-crop grids, so a batch mixes view counts.
SIZES = [(48, 36), (30, 60), (40, 40), (90, 30), (36, 48)]


def write_image(path: Path, size, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def strip_ids(records):
    return [{k: v for k, v in r.items() if k != "answer_id"} for r in records]


def answers(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def make_vqa(d: Path) -> Path:
    """Five short-answer questions with images of different shapes in ``d``."""
    for i, size in enumerate(SIZES):
        write_image(d / "images" / f"{i}.png", size, i)
    rows = [{"question_id": 100 + i, "image": f"{i}.png", "category": "default",
             "text": f"What color is object {i}?\nAnswer the question using a single word or phrase."}
            for i in range(len(SIZES))]
    write_jsonl(d / "questions.jsonl", rows)
    return d


def loader_args(ckpt: str, d: Path, answers_file, *extra) -> list[str]:
    return ["--model-path", ckpt, "--question-file", str(d / "questions.jsonl"), "--image-folder",
            str(d / "images"), "--answers-file", str(answers_file), *FAST, *extra]


def copy_run(src_dir: Path, dst_dir: Path, stem: str = "answers") -> Path:
    """Copy a finished run (answers + both config records) into ``dst_dir``."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    for name in (f"{stem}.jsonl", f"{stem}.config.json", "config.json"):
        (dst_dir / name).write_bytes((src_dir / name).read_bytes())
    return dst_dir / f"{stem}.jsonl"


def checkpoint_variant(src: str, dst: Path, config_changes: dict | None = None, flip_weight_byte: bool = False) -> str:
    """A checkpoint folder made of links to ``src``'s files, with ``config.json`` edited and
    optionally one weight byte changed (in a real copy of that shard)."""
    dst.mkdir(parents=True)
    for name in os.listdir(src):
        if name != "config.json":
            os.symlink(os.path.join(src, name), dst / name)
    cfg = json.loads(Path(src, "config.json").read_text())
    cfg.update(config_changes or {})
    (dst / "config.json").write_text(json.dumps(cfg))
    if flip_weight_byte:
        shard = sorted(n for n in os.listdir(src) if n.endswith(".safetensors"))[0]
        data = bytearray(Path(src, shard).read_bytes())
        (header_len,) = struct.unpack("<Q", bytes(data[:8]))
        data[8 + header_len + 5] ^= 0xFF  # a byte of the first tensor
        (dst / shard).unlink()
        (dst / shard).write_bytes(bytes(data))
    return str(dst)


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> None:
    """A PNG whose header announces ``width`` × ``height`` pixels (no pixel data needed: PIL
    refuses it as a decompression bomb when opening it)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
