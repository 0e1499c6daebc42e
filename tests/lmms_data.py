"""A tiny evaluation data root in the layout of ``playground/data/eval`` (the scripts' and the
local lmms-eval tasks' files), for the ten benchmarks: a few questions each, small random
images, ground truth in each benchmark's own format."""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
from PIL import Image

SHORT = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."
SIZES = [(100, 80), (80, 100), (60, 60)]


def _image(path: str, size: tuple[int, int], seed: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _jsonl(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False)


def _b64_png(seed: int, size=(70, 50)) -> str:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _short(root: str, bench: str, qfile: str, img_dir: str, n: int, seed: int, qid=lambda i: i) -> list[dict]:
    rows = []
    for i in range(n):
        name = f"img{i}.jpg"
        _image(os.path.join(root, bench, img_dir, name), SIZES[i % len(SIZES)], seed + i)
        rows.append({"question_id": qid(i), "image": name, "text": f"What is shown in the image {i}?{SHORT}",
                     "category": "default"})
    _jsonl(os.path.join(root, bench, qfile), rows)
    return rows


def write_gqa(root: str) -> dict:
    rows = _short(root, "gqa", "llava_gqa_testdev_balanced.jsonl", "data/images", 3, 10, qid=lambda i: f"20{i}")
    gt = {r["question_id"]: {"answer": a, "isBalanced": True, "types": {"structural": s}}
          for r, a, s in zip(rows, ["yes", "left", "red"], ["verify", "query", "query"])}
    _json(os.path.join(root, "gqa", "data", "testdev_balanced_questions.json"), gt)
    return gt


POPE_LABELS = {"adversarial": ["yes", "no"], "random": ["no", "yes"], "popular": ["yes", "yes"]}


def write_pope(root: str) -> None:
    questions, qid = [], 0
    for split, labels in POPE_LABELS.items():
        lines = []
        for i, label in enumerate(labels):
            qid += 1
            name = f"COCO_val2014_{qid:012d}.jpg"
            _image(os.path.join(root, "pope", "val2014", name), SIZES[qid % 3], 20 + qid)
            text = f"Is there a thing {i} in the image?"
            questions.append({"question_id": qid, "image": name, "text": text, "category": split})
            lines.append({"question_id": i + 1, "image": name, "text": text, "label": label})
        _jsonl(os.path.join(root, "pope", "coco", f"coco_pope_{split}.json"), lines)
    _jsonl(os.path.join(root, "pope", "llava_pope_test.jsonl"), questions)


def write_textvqa(root: str) -> None:
    rows, data = [], []
    for i in range(2):
        name = f"tv{i}.jpg"
        _image(os.path.join(root, "textvqa", "train_images", name), SIZES[i], 40 + i)
        q = f"what does sign {i} say?"
        rows.append({"question_id": f"img{i}", "image": name,
                     "text": f"{q}\nReference OCR token: stop, go{SHORT}"})
        data.append({"question_id": 100 + i, "image_id": f"img{i}", "question": q,
                     "answers": ["stop"] * 6 + ["go"] * 4 if i == 0 else ["go"] * 10})
    _jsonl(os.path.join(root, "textvqa", "llava_textvqa_val_v051_ocr.jsonl"), rows)
    _json(os.path.join(root, "textvqa", "TextVQA_0.5.1_val.json"), {"data": data})


MME_QA = {("existence", "e1.jpg"): [("Is there a dog in this image?", "Yes"), ("Is there a cat in this image?", "No")],
          ("artwork", "a1.jpg"): [("Is this artwork by Monet?", "No"), ("Is this artwork by Dali?", "Yes")]}


def write_mme(root: str) -> None:
    rows = []
    for i, ((sub, name), qa) in enumerate(MME_QA.items()):
        _image(os.path.join(root, "MME", "MME_Benchmark_release_version", sub, name), SIZES[i], 50 + i)
        gt = []
        for q, a in qa:
            rows.append({"question_id": f"{sub}/{name}", "image": f"{sub}/{name}",
                         "text": f"{q} Please answer yes or no.{SHORT}", "category": sub})
            gt.append(f"{name}\t{q} Please answer yes or no.\t{a}\n")
        path = os.path.join(root, "MME", "eval_tool", "Your_Results", f"{sub}.txt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(gt)
    _jsonl(os.path.join(root, "MME", "llava_mme.jsonl"), rows)


SQA = {"11": (3, 0, True), "12": (2, 1, False), "13": (3, 2, True)}  # pid: (choices, answer, image)


def write_sqa(root: str) -> None:
    base = os.path.join(root, "scienceqa")
    problems, questions = {}, []
    for j, (pid, (n, ans, img)) in enumerate(SQA.items()):
        choices = ["x", "y", "z"][:n]
        problems[pid] = {"question": f"q{pid}", "choices": choices, "answer": ans,
                         "image": "image.png" if img else None, "split": "test"}
        opts = " ".join(f"({c}) {t}" for c, t in zip("ABC", choices))
        q = {"id": pid, "conversations": [{"from": "human",
                                            "value": ("<image>\n" if img else "") + f"Context: N/A\nQuestion: q{pid}\nOptions: {opts}"},
                                           {"from": "gpt", "value": "A"}]}
        if img:
            q["image"] = f"{pid}/image.png"
            _image(os.path.join(base, "images", "test", pid, "image.png"), SIZES[j], 60 + j)
        questions.append(q)
    _json(os.path.join(base, "problems.json"), problems)
    _json(os.path.join(base, "pid_splits.json"), {"test": list(SQA)})
    _json(os.path.join(base, "llava_test_CQM-A.json"), questions)


def write_mmbench(root: str, name: str = "mmbench_dev_20230712.tsv", hint: str = "a hint") -> None:
    import pandas as pd

    rows = []
    for i, (q, opts, ans) in enumerate([("Which colour?", ["red", "blue", "green"], "B"),
                                        ("Which animal?", ["cat", "dog"], "A")]):
        row = {"index": i, "question": q, "hint": hint if i == 0 else None, "answer": ans,
               "category": "c", "l2-category": "l2", "split": "dev", "image": _b64_png(70 + i)}
        row.update({c: o for c, o in zip("ABCD", opts)})
        rows.append(row)
    path = os.path.join(root, "mmbench", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pd.DataFrame(rows, columns=["index", "question", "hint", "A", "B", "C", "D", "answer", "category",
                                "l2-category", "split", "image"]).to_csv(path, sep="\t", index=False)


def write_vqav2(root: str) -> None:
    rows = _short(root, "vqav2", "llava_vqav2_mscoco_test-dev2015.jsonl", "test2015", 2, 80, qid=lambda i: 5000 + i)
    _jsonl(os.path.join(root, "vqav2", "llava_vqav2_mscoco_test2015.jsonl"),
           rows + [{"question_id": 6000, "image": "other.jpg", "text": "not in test-dev"}])


def write_vizwiz(root: str) -> None:
    _short(root, "vizwiz", "llava_test.jsonl", "test", 2, 90)


def write_mmvet(root: str) -> None:
    rows = _short(root, "mm-vet", "llava-mm-vet.jsonl", "images", 2, 95)
    _json(os.path.join(root, "mm-vet", "mm-vet.json"),
          {f"v1_{r['question_id']}": {"question": r["text"], "answer": "x", "capability": ["rec"]} for r in rows})


def write_eval_data(root: str) -> str:
    """All ten benchmarks under ``root``; returns ``root``."""
    write_gqa(root)
    write_pope(root)
    write_textvqa(root)
    write_mme(root)
    write_sqa(root)
    write_mmbench(root)
    write_mmbench(root, "mmbench_dev_cn_20231003.tsv", hint="提示")
    write_vqav2(root)
    write_vizwiz(root)
    write_mmvet(root)
    return root


# ----------------------------------------------------------------------------- the tiny video task

#: The tiny video task's files (tests/lmms_video_task): name -> (frames, fps, width, height, seed).
VIDEO_CLIPS = {"clip0.mp4": (24, 6, 112, 84, 0), "clip1.mp4": (18, 6, 84, 112, 1)}
#: The frames each video model sees of the clips with 4 frames asked for (``max_frames_num=4`` /
#: ``max_num_frames=4``), derived by hand: OneVision ``linspace(0, total - 1, 4)`` truncated;
#: Qwen at 2 fps 8 / 6 frames at ``round(linspace(0, total - 1, n))``, of which
#: ``linspace(0, n - 1, 4)`` truncated.
VIDEO_INDICES = {"llava_onevision_gc2": {"clip0.mp4": [0, 7, 15, 23], "clip1.mp4": [0, 5, 11, 17]},
                 "qwen2_vl_gc2": {"clip0.mp4": [0, 7, 13, 23], "clip1.mp4": [0, 3, 10, 17]}}
VIDEO_TASK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lmms_video_task")
VIDEO_MEDIA_ENV = "LLAVA_TINY_VIDEO_MEDIA"


def write_video_media(root: str) -> str:
    """The video files (a random picture drifting from frame to frame) and the picture of the
    tiny video task (``video_tiny``) under ``root``; returns ``root``."""
    from hf_helpers import random_clip, write_video

    os.makedirs(root, exist_ok=True)
    for name, (frames, fps, w, h, seed) in VIDEO_CLIPS.items():
        write_video(os.path.join(root, name), random_clip(frames, w, h, seed=seed), fps)
    _image(os.path.join(root, "pic0.png"), (90, 70), 7)
    return root
