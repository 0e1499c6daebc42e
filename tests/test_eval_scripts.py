"""End to end: every scripts/v1_5/eval/<bench>.sh on a tiny synthetic copy of its benchmark (the
real on-disk formats, 2-4 questions each) with the tiny random checkpoint: generation, then the
scorer or the submission conversion. The scores are meaningless; the files and lines must exist.

The ten scripts run two at a time (each is one generation process + one scorer process)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "v1_5" / "eval"
PYTHON = sys.executable
CKPT = "tiny-llava"
RATIO = "0.25"
TAG = f"{CKPT}-globalcom2-r{RATIO}"
TAG_NONE = f"{CKPT}-none"
SUFFIX = "\nAnswer the question using a single word or phrase."


def _img(path: Path, size=(40, 30), seed=0, fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, format=fmt)


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


# ----------------------------------------------------------------------------- datasets


def make_vqav2(d: Path) -> None:
    b = d / "vqav2"
    rows = []
    for i in range(3):
        name = f"COCO_test2015_{i:012d}.jpg"
        _img(b / "test2015" / name, seed=i)
        rows.append({"question_id": 1000 + i, "image": name, "text": f"What is in picture {i}?" + SUFFIX,
                     "category": "default"})
    _jsonl(b / "llava_vqav2_mscoco_test-dev2015.jsonl", rows[:2])
    extra = {"question_id": 2000, "image": "COCO_test2015_000000009999.jpg", "text": "Other?" + SUFFIX,
             "category": "default"}
    _jsonl(b / "llava_vqav2_mscoco_test2015.jsonl", rows + [extra])


def make_gqa(d: Path) -> None:
    b = d / "gqa"
    rows, gt = [], {}
    for i, (q, a) in enumerate([("Is the sky blue?", "yes"), ("What animal is it?", "dog"), ("Which color?", "red")]):
        _img(b / "data" / "images" / f"n{i}.jpg", seed=10 + i)
        qid = f"2096837{i}"
        rows.append({"question_id": qid, "image": f"n{i}.jpg", "text": q + SUFFIX})
        gt[qid] = {"imageId": f"n{i}", "question": q, "answer": a,
                   "types": {"structural": "verify" if a == "yes" else "query", "semantic": "attr"}}
    _jsonl(b / "llava_gqa_testdev_balanced.jsonl", rows)
    _json(b / "data" / "testdev_balanced_questions.json", gt)


def make_vizwiz(d: Path) -> None:
    b = d / "vizwiz"
    rows = []
    for i in range(2):
        name = f"VizWiz_test_{i:08d}.jpg"
        _img(b / "test" / name, size=(30, 50), seed=20 + i)
        rows.append({"question_id": i, "image": name, "text": "What is this?\nWhen the provided information "
                     "is insufficient, respond with 'Unanswerable'." + SUFFIX})
    _jsonl(b / "llava_test.jsonl", rows)


def make_sqa(d: Path) -> None:
    b = d / "scienceqa"
    problems, questions = {}, []
    for pid, with_image in (("4", True), ("7", False), ("9", True)):
        choices = ["Maine", "Texas", "Ohio"]
        body = "Context: N/A\nWhich state is farthest north?\nA. Maine\nB. Texas\nC. Ohio"
        problems[pid] = {"question": "Which state is farthest north?", "choices": choices, "answer": 0,
                         "hint": "", "image": "image.png" if with_image else None, "task": "closed choice",
                         "grade": "grade4", "subject": "social science", "split": "test"}
        entry = {"id": pid, "conversations": [{"from": "human", "value": ("<image>\n" if with_image else "") + body},
                                              {"from": "gpt", "value": "A"}]}
        if with_image:
            entry["image"] = f"{pid}/image.png"
            _img(b / "images" / "test" / pid / "image.png", size=(60, 40), seed=int(pid))
        questions.append(entry)
    _json(b / "llava_test_CQM-A.json", questions)
    _json(b / "problems.json", problems)
    _json(b / "pid_splits.json", {"test": list(problems), "train": [], "val": []})


def make_textvqa(d: Path) -> None:
    b = d / "textvqa"
    rows, data = [], []
    for i, (q, ans) in enumerate([("what brand is the camera?", "nikon"), ("what number is shown?", "5")]):
        img_id = f"003a8ae2ef43b90{i}"
        _img(b / "train_images" / f"{img_id}.jpg", size=(50, 30), seed=30 + i)
        # LLaVA's question file puts the image id in question_id (the scorer keys on it)
        rows.append({"question_id": img_id, "image": f"{img_id}.jpg",
                     "text": f"{q}\nReference OCR token: {ans}, digital" + SUFFIX})
        data.append({"question_id": 34602 + i, "image_id": img_id, "question": q, "answers": [ans] * 10})
    _jsonl(b / "llava_textvqa_val_v051_ocr.jsonl", rows)
    _json(b / "TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data})


def make_pope(d: Path) -> None:
    b = d / "pope"
    rows = []
    for i, cat in enumerate(("adversarial", "random", "popular")):
        name = f"COCO_val2014_{i:012d}.jpg"
        _img(b / "val2014" / name, seed=40 + i)
        q = {"question_id": i + 1, "image": name, "text": "Is there a dog in the image?", "category": cat}
        rows.append(q)
        _jsonl(b / "coco" / f"coco_pope_{cat}.json",
               [{"question_id": 1, "image": name, "text": q["text"], "label": "yes"}])  # F1 needs a true "yes"
    _jsonl(b / "llava_pope_test.jsonl", rows)


def make_mme(d: Path) -> None:
    b = d / "MME"
    rows, gt = [], []
    for stem in ("10002", "10049"):
        _img(b / "MME_Benchmark_release_version" / "artwork" / f"{stem}.jpg", size=(45, 35), seed=int(stem))
        for q, a in (("Is this artwork created by Vincent van Gogh?", "Yes"), ("Is this artwork created by Monet?", "No")):
            rows.append({"question_id": f"artwork/{stem}.jpg", "image": f"artwork/{stem}.jpg",
                         "text": q + " Please answer yes or no." + SUFFIX, "category": "artwork"})
            gt.append(f"{stem}.jpg\t{q} Please answer yes or no.\t{a}")
    _jsonl(b / "llava_mme.jsonl", rows)
    gt_file = b / "eval_tool" / "Your_Results" / "artwork.txt"
    gt_file.parent.mkdir(parents=True)
    gt_file.write_text("\n".join(gt) + "\n")


def _b64(size, seed) -> str:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _mmbench_tsv(path: Path, rows: list[dict]) -> None:
    cols = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "split", "image"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["\t".join(cols)] + ["\t".join(str(r.get(c, "")) for c in cols) for r in rows]) + "\n",
                    encoding="utf-8")


def make_mmbench(d: Path) -> None:
    img0, img1 = _b64((40, 30), 50), _b64((30, 40), 51)
    base = {"category": "attribute", "l2-category": "perception", "split": "dev"}
    en = [
        {**base, "index": 0, "question": "What color is the box?", "hint": "nan", "A": "red", "B": "blue",
         "answer": "A", "image": img0},
        # its circular copy, as in the release TSV (index + 1,000,000, options rotated)
        {**base, "index": 1000000, "question": "What color is the box?", "hint": "nan", "A": "blue", "B": "red",
         "answer": "B", "image": img0},
        {**base, "index": 1, "question": "How many cats?", "hint": "Look closely.", "A": "1", "B": "2", "C": "3",
         "answer": "C", "image": img1},
    ]
    _mmbench_tsv(d / "mmbench" / "mmbench_dev_20230712.tsv", en)
    cn = [
        {**base, "index": 0, "question": "盒子是什么颜色？", "hint": "nan", "A": "红", "B": "蓝", "answer": "A", "image": img0},
        {**base, "index": 1, "question": "有几只猫？", "hint": "仔细看。", "A": "1", "B": "2", "C": "3", "answer": "C",
         "image": img1},
    ]
    _mmbench_tsv(d / "mmbench" / "mmbench_dev_cn_20231003.tsv", cn)


def make_mmvet(d: Path) -> None:
    b = d / "mm-vet"
    rows, gt = [], {}
    for i, (q, a) in enumerate([("What is written on the sign?", "stop"), ("What is 2+3?", "5")]):
        _img(b / "images" / f"v1_{i}.png", size=(35, 45), seed=60 + i)
        rows.append({"question_id": i, "image": f"v1_{i}.png", "text": q})
        gt[f"v1_{i}"] = {"imagename": f"v1_{i}.png", "capability": ["ocr"] if i == 0 else ["math"],
                         "question": q, "answer": a}
    _jsonl(b / "llava-mm-vet.jsonl", rows)
    _json(b / "mm-vet.json", gt)


# ----------------------------------------------------------------------------- fake MM-Vet grader


class _Grader(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server API)
        self.rfile.read(int(self.headers["Content-Length"]))
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": "0.5"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


# ----------------------------------------------------------------------------- running the scripts

# bench -> extra environment
RUNS = {
    "vqav2": {"CHUNKS": "3"},  # three chunk processes + the merge, as with three GPUs; 2 questions: one is empty
    "gqa": {},
    "vizwiz": {},
    "sqa": {},
    "textvqa": {},
    "pope": {"METHOD": "none"},  # uncompressed: no ratio flag
    "mme": {},
    "mmbench": {},
    "mmbench_cn": {},
    "mmvet": {},
}


@pytest.fixture(scope="module")
def runs(tiny_ckpt, tmp_path_factory):
    data = tmp_path_factory.mktemp("eval")
    for make in (make_vqav2, make_gqa, make_vizwiz, make_sqa, make_textvqa, make_pope, make_mme, make_mmbench,
                 make_mmvet):
        make(data)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Grader)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base_env = {
        **os.environ, "PYTHON": str(PYTHON), "MODEL_PATH": tiny_ckpt, "CKPT": CKPT, "DATA": str(data),
        "METHOD": "globalcom2", "RATIO": RATIO, "EXTRA_ARGS": "--max-new-tokens 3 --batch-size 2",
        "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "MMVET_API_BASE": f"http://127.0.0.1:{server.server_address[1]}/v1", "MMVET_API_KEY": "test",
    }
    for k in ("CHUNKS", "GPULIST", "CUDA_VISIBLE_DEVICES", "TAG", "NPROC", "SPLIT"):
        base_env.pop(k, None)

    def run(bench):
        env = {**base_env, **RUNS[bench]}
        return bench, subprocess.run(["bash", str(SCRIPTS / f"{bench}.sh")], env=env, cwd=ROOT,
                                     capture_output=True, text=True, timeout=300)

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = dict(pool.map(run, RUNS))
    finally:
        server.shutdown()
        server.server_close()
    return data, results


def _ok(runs, bench):
    data, results = runs
    proc = results[bench]
    assert proc.returncode == 0, f"{bench}.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return data, proc


def _last_line(proc) -> str:
    return proc.stdout.strip().splitlines()[-1]


def _answers(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _check_answers(d: Path, n: int, method="globalcom2") -> list[dict]:
    recs = _answers(d / "merge.jsonl")
    assert len(recs) == n and not any("error" in r for r in recs)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model"] == CKPT and cfg["compression"]["name"] == method
    if method != "none":
        assert cfg["compression"]["retention_ratio"] == float(RATIO)
        assert all(r["metadata"]["visual_tokens"] < r["metadata"]["visual_tokens_uncompressed"]
                   for r in recs if r["metadata"]["visual_tokens"])
    return recs


def _check_score(path: Path, bench: str, method="globalcom2", ratio=float(RATIO)) -> dict:
    rec = json.loads(path.read_text())
    assert rec["benchmark"] == bench and isinstance(rec["score"], float)
    assert rec["method"] == method and rec["retention_ratio"] == ratio and rec["model"] == CKPT
    return rec


def test_vqav2(runs):
    data, proc = _ok(runs, "vqav2")
    d = data / "vqav2" / "answers" / "llava_vqav2_mscoco_test-dev2015" / TAG
    recs = _check_answers(d, 2)
    assert [r["question_id"] for r in recs] == [1000, 1001]  # chunks merged in order
    assert [len(_answers(d / f"3_{k}.jsonl")) for k in range(3)] == [1, 1, 0]  # more chunks than questions
    upload = json.loads((data / "vqav2" / "answers_upload" / "llava_vqav2_mscoco_test-dev2015" / f"{TAG}.json").read_text())
    assert sorted(x["question_id"] for x in upload) == [1000, 1001, 1002, 2000]


def test_gqa(runs):
    data, proc = _ok(runs, "gqa")
    d = data / "gqa" / "answers" / "llava_gqa_testdev_balanced" / TAG
    _check_answers(d, 3)
    assert re.fullmatch(r"GQA accuracy: \d+\.\d+%", _last_line(proc))
    _check_score(d / "score_gqa.json", "gqa")
    assert len(json.loads((d / "testdev_balanced_predictions.json").read_text())) == 3


def test_vizwiz(runs):
    data, proc = _ok(runs, "vizwiz")
    _check_answers(data / "vizwiz" / "answers" / TAG, 2)
    upload = json.loads((data / "vizwiz" / "answers_upload" / f"{TAG}.json").read_text())
    assert [x["image"] for x in upload] == ["VizWiz_test_00000000.jpg", "VizWiz_test_00000001.jpg"]


def test_sqa(runs):
    data, proc = _ok(runs, "sqa")
    d = data / "scienceqa" / "answers" / TAG
    recs = _check_answers(d, 3)
    assert recs[1]["metadata"]["visual_tokens"] == 0  # the text-only question
    assert all(r["prompt"].endswith("Answer with the option's letter from the given choices directly.") for r in recs)
    # the original scorer's IMG subset: problems whose answer prompt holds "<image>"
    assert [r["question_id"] for r in recs if "<image>" in r["prompt"]] == ["4", "9"]
    assert re.fullmatch(r"IMG-Accuracy: \d+\.\d+%", _last_line(proc))
    _check_score(d / "score_sqa.json", "sqa")


def test_textvqa(runs):
    data, proc = _ok(runs, "textvqa")
    d = data / "textvqa" / "answers" / TAG
    recs = _check_answers(d, 2)
    assert all("Reference OCR token" in r["prompt"] for r in recs)
    assert re.fullmatch(r"Accuracy: \d+\.\d+%", _last_line(proc))
    assert _check_score(d / "score_textvqa.json", "textvqa")["num_samples"] == 2


def test_pope_uncompressed(runs):
    data, proc = _ok(runs, "pope")
    d = data / "pope" / "answers" / TAG_NONE
    recs = _check_answers(d, 3, method="none")
    assert all(r["metadata"]["visual_tokens"] == r["metadata"]["visual_tokens_uncompressed"] for r in recs)
    assert re.fullmatch(r"POPE F1 \(mean over 3 splits\): \d+\.\d+", _last_line(proc))
    _check_score(d / "score_pope.json", "pope", method="uncompressed", ratio=1.0)


def test_mme(runs):
    data, proc = _ok(runs, "mme")
    d = data / "MME" / "answers" / TAG
    recs = _check_answers(d, 4)
    assert [r["metadata"].get("occurrence", 0) for r in recs] == [0, 1, 0, 1]  # two questions per image id
    assert re.fullmatch(r"MME perception: \d+\.\d+", _last_line(proc))
    _check_score(d / "score_mme.json", "mme")
    assert (data / "MME" / "eval_tool" / "answers" / TAG / "artwork.txt").exists()


def test_mmbench(runs):
    data, proc = _ok(runs, "mmbench")
    d = data / "mmbench" / "answers" / "mmbench_dev_20230712" / TAG
    recs = _check_answers(d, 3)
    assert [r["question_id"] for r in recs] == [0, 1000000, 1]
    assert recs[2]["prompt"] == "Look closely.\nHow many cats?\nA. 1\nB. 2\nC. 3"  # as the original: no instruction
    assert json.loads((d / "config.json").read_text())["prompt_options"]["single_pred_prompt"] is True
    assert re.fullmatch(r"MMBench CircularEval accuracy: \d+\.\d+%", _last_line(proc))
    _check_score(d / "score_mmbench.json", "mmbench")
    assert (data / "mmbench" / "answers_upload" / "mmbench_dev_20230712" / f"{TAG}.xlsx").exists()


def test_mmbench_cn(runs):
    data, proc = _ok(runs, "mmbench_cn")
    d = data / "mmbench" / "answers" / "mmbench_dev_cn_20231003" / TAG
    _check_answers(d, 2)
    assert json.loads((d / "config.json").read_text())["prompt_options"]["lang"] == "cn"
    assert re.fullmatch(r"MMBench CircularEval accuracy: \d+\.\d+%", _last_line(proc))
    _check_score(d / "score_mmbench_cn.json", "mmbench_cn")


def test_mmvet(runs):
    data, proc = _ok(runs, "mmvet")
    d = data / "mm-vet" / "answers" / TAG
    _check_answers(d, 2)
    assert set(json.loads((data / "mm-vet" / "results" / f"{TAG}.json").read_text())) == {"v1_0", "v1_1"}
    assert re.fullmatch(r"MM-Vet total: \d+\.\d+", _last_line(proc))
    assert _check_score(d / "score_mmvet.json", "mmvet")["score"] == pytest.approx(50.0)


def test_summarize_collects_the_runs(runs, capsys):
    """The score records + config.json files feed llava.eval.summarize's table."""
    from llava.eval import summarize

    data, _ = runs
    rows = summarize.main(["--results-dir", str(data)])
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == {"globalcom2", "uncompressed"}
    assert by_method["globalcom2"]["retention_ratio"] == float(RATIO) and by_method["globalcom2"]["model"] == CKPT
    assert set(by_method["globalcom2"]["scores"]) == {"gqa", "sqa", "textvqa", "mme", "mmbench", "mmbench_cn", "mmvet"}
    assert set(by_method["uncompressed"]["scores"]) == {"pope"}


def _rerun(runs, bench: str, model_path: str) -> subprocess.CompletedProcess:
    data, _ = runs
    env = {**os.environ, "PYTHON": str(PYTHON), "MODEL_PATH": model_path, "CKPT": CKPT, "DATA": str(data),
           "METHOD": "globalcom2", "RATIO": RATIO, "EXTRA_ARGS": "--max-new-tokens 3 --batch-size 2",
           "OMP_NUM_THREADS": "1"}
    for k in ("CHUNKS", "GPULIST", "CUDA_VISIBLE_DEVICES", "TAG", "NPROC", "SPLIT"):
        env.pop(k, None)
    return subprocess.run(["bash", str(SCRIPTS / f"{bench}.sh")], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_resume_is_a_no_op_when_done(runs, tiny_ckpt):
    """Re-running a finished script regenerates nothing (same answers, answer ids included)."""
    data, _ = runs
    d = data / "textvqa" / "answers" / TAG
    before = (d / "merge.jsonl").read_text()
    proc = _rerun(runs, "textvqa", tiny_ckpt)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 answered, 0 failed (0 done in this run, 2 earlier)" in proc.stdout
    assert (d / "merge.jsonl").read_text() == before
