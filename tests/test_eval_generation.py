"""Generation drivers (llava.eval.model_vqa*, llava.eval.common): prompts, answer files, errors,
resuming after a kill, batching and data-parallel runs — on the tiny random checkpoint."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava.eval import common, model_vqa_loader, model_vqa_mmbench, model_vqa_science

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--max-new-tokens", "3", "--compression", "globalcom2", "--retention-ratio", "0.25"]
# Different sizes on purpose: 2- and 3-crop grids, so a batch mixes view counts.
SIZES = [(48, 36), (30, 60), (40, 40), (90, 30), (36, 48)]


def _image(path: Path, size, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _strip(records):
    return [{k: v for k, v in r.items() if k != "answer_id"} for r in records]


def _answers(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def vqa(tmp_path_factory):
    """Five short-answer questions with images of different shapes."""
    d = tmp_path_factory.mktemp("vqa")
    for i, size in enumerate(SIZES):
        _image(d / "images" / f"{i}.png", size, i)
    rows = [{"question_id": 100 + i, "image": f"{i}.png", "category": "default",
             "text": f"What color is object {i}?\nAnswer the question using a single word or phrase."}
            for i in range(len(SIZES))]
    _write_jsonl(d / "questions.jsonl", rows)
    return d


def _loader(tiny_ckpt, d: Path, answers, *extra) -> dict:
    return model_vqa_loader.main(["--model-path", tiny_ckpt, "--question-file", str(d / "questions.jsonl"),
                                  "--image-folder", str(d / "images"), "--answers-file", str(answers),
                                  *FAST, *extra])


@pytest.fixture(scope="module")
def reference(tiny_ckpt, vqa):
    """The uninterrupted single-process, batch-size-1 run."""
    out = vqa / "ref" / "answers.jsonl"
    _loader(tiny_ckpt, vqa, out)
    return _answers(out)


# ----------------------------------------------------------------------------- answer files


def test_answer_file_format_and_config(reference, vqa):
    assert [r["question_id"] for r in reference] == [100, 101, 102, 103, 104]
    for r in reference:
        assert set(r) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
        assert r["prompt"].endswith("\nAnswer the question using a single word or phrase.")
        assert r["prompt"].count("Answer the question") == 1 and "<image>" not in r["prompt"]
        meta = r["metadata"]
        assert 0 < meta["visual_tokens"] < meta["visual_tokens_uncompressed"]
        assert meta["compression"]["name"] == "globalcom2" and meta["compression"]["retention_ratio"] == 0.25
        assert len(meta["budgets"]) == len(meta["crop_kept"]) == meta["grid"][0] * meta["grid"][1]
    stem_cfg = json.loads((vqa / "ref" / "answers.config.json").read_text())
    dir_cfg = json.loads((vqa / "ref" / "config.json").read_text())
    for cfg in (stem_cfg, dir_cfg):
        assert cfg["compression"]["name"] == "globalcom2" and cfg["compression"]["retention_ratio"] == 0.25
        assert cfg["generation"]["max_new_tokens"] == 3 and cfg["generation"]["temperature"] == 0.0
        assert cfg["driver"] == "model_vqa_loader"
    assert stem_cfg["num_chunks"] == 1 and "num_chunks" not in dir_cfg
    # what the scorers and summarize read from it
    from llava.eval.scoring_utils import read_run_config

    fields = read_run_config(str(vqa / "ref" / "answers.jsonl"))
    assert fields["method"] == "globalcom2" and fields["retention_ratio"] == 0.25 and fields["model"]


def test_resume_refuses_other_settings(tiny_ckpt, vqa, reference, tmp_path):
    out = tmp_path / "a.jsonl"
    _write_jsonl(out, reference[:2])
    (tmp_path / "a.config.json").write_text((vqa / "ref" / "answers.config.json").read_text())
    with pytest.raises(SystemExit, match="other settings"):
        _loader(tiny_ckpt, vqa, out, "--retention-ratio", "0.5")


def test_batch_size_2_equals_batch_size_1(tiny_ckpt, vqa, reference, tmp_path):
    out = tmp_path / "b2.jsonl"
    _loader(tiny_ckpt, vqa, out, "--batch-size", "2")
    assert _strip(_answers(out)) == _strip(reference)


def test_torn_last_line_is_repaired_on_resume(tiny_ckpt, vqa, reference, tmp_path):
    out = tmp_path / "torn" / "answers.jsonl"
    out.parent.mkdir()
    for name in ("answers.config.json", "config.json"):
        (out.parent / name).write_text((vqa / "ref" / name).read_text())
    line = json.dumps(reference[2])
    out.write_text("".join(json.dumps(r) + "\n" for r in reference[:2]) + line[: len(line) // 2])
    assert len(common.read_answers(str(out))) == 2  # the fragment is not an answer
    summary = _loader(tiny_ckpt, vqa, out)
    assert summary["skipped"] == 2 and summary["answered_now"] == 3
    assert _strip(_answers(out)) == _strip(reference)


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"question_id": 1}\nnot json\n{"question_id": 2}\n')
    with pytest.raises(SystemExit, match="corrupt answer line"):
        common.read_answers(str(p), repair=True)
    p.write_text('{"question_id": 1}\n{"question_id": 2}')  # a whole record without its newline is kept
    assert len(common.read_answers(str(p), repair=True)) == 2
    assert p.read_text() == '{"question_id": 1}\n{"question_id": 2}\n'
    p.write_text('{"question_id": 1}\n{"question_id": 2, "te')
    assert len(common.read_answers(str(p), repair=True)) == 1 and p.read_text() == '{"question_id": 1}\n'


def test_kill_and_resume_matches_uninterrupted_run(tiny_ckpt, vqa, reference, tmp_path):
    out = tmp_path / "killed" / "answers.jsonl"
    cmd = [sys.executable, "-m", "llava.eval.model_vqa_loader", "--model-path", tiny_ckpt,
           "--question-file", str(vqa / "questions.jsonl"), "--image-folder", str(vqa / "images"),
           "--answers-file", str(out), *FAST]
    env = {**os.environ, common.FAULT_ENV: "2", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    raw = out.read_text()
    assert raw.count("\n") == 2 and not raw.endswith("\n")  # two answers and a torn third line
    summary = _loader(tiny_ckpt, vqa, out)
    assert summary["skipped"] == 2 and summary["answered_now"] == 3 and summary["errors"] == 0
    assert _strip(_answers(out)) == _strip(reference)
    summary = _loader(tiny_ckpt, vqa, out)  # nothing left: nothing duplicated
    assert summary["answered_now"] == 0 and len(_answers(out)) == len(reference)


def test_torchrun_two_processes_equal_single_process(tiny_ckpt, vqa, reference, tmp_path):
    out = tmp_path / "dp" / "answers.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "llava.eval.model_vqa_loader", "--model-path", tiny_ckpt,
           "--question-file", str(vqa / "questions.jsonl"), "--image-folder", str(vqa / "images"),
           "--answers-file", str(out), *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _strip(_answers(out)) == _strip(reference)
    assert not list(out.parent.glob("*.part-*"))  # the per-rank files were merged away
    assert json.loads((out.parent / "answers.config.json").read_text())["world_size"] == 2
    assert "5 answered, 0 failed" in proc.stdout


def test_chunks_cover_the_question_file(tiny_ckpt, vqa, reference, tmp_path):
    parts = []
    for k in range(2):
        out = tmp_path / f"2_{k}.jsonl"
        _loader(tiny_ckpt, vqa, out, "--num-chunks", "2", "--chunk-idx", str(k))
        parts += _answers(out)
    assert _strip(parts) == _strip(reference)
    assert [len(common.get_chunk(list(range(7)), 3, k)) for k in range(3)] == [3, 2, 2]


# ----------------------------------------------------------------------------- errors


def test_errors_are_recorded_and_optionally_retried(tiny_ckpt, vqa, reference, tmp_path):
    rows = [json.loads(x) for x in (vqa / "questions.jsonl").read_text().splitlines()[:3]]
    rows.insert(1, {"question_id": 7, "image": "later.png", "text": "Missing?"})
    rows.insert(2, '{"question_id": 8, "image": "0.png", "text": ')  # malformed line
    rows.insert(3, {"question_id": 9, "image": "0.png"})  # no text
    rows.append("[1, 2]")  # not an object, no id
    qfile = tmp_path / "q.jsonl"
    _write_jsonl(qfile, rows)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        (images / f"{i}.png").write_bytes((vqa / "images" / f"{i}.png").read_bytes())
    (images / "corrupt.png").write_bytes(b"\x89PNG not really")
    rows.append({"question_id": 10, "image": "corrupt.png", "text": "Corrupt?"})
    _write_jsonl(qfile, rows)
    out = tmp_path / "ans" / "answers.jsonl"
    args = ["--model-path", tiny_ckpt, "--question-file", str(qfile), "--image-folder", str(images),
            "--answers-file", str(out), *FAST, "--batch-size", "2"]
    summary = model_vqa_loader.main(args)
    recs = _answers(out)
    assert [r["question_id"] for r in recs] == [100, 7, 8, 9, 101, 102, None, 10]
    errors = {r["question_id"]: r for r in recs if "error" in r}
    assert set(errors) == {7, 8, 9, None, 10} and summary["errors"] == 5
    for r in errors.values():
        assert r["text"] == "" and r["metadata"]["error"] == r["error"]
    assert "later.png" in errors[7]["error"] and "not found" in errors[7]["error"]
    assert "malformed question line 3" in errors[8]["error"]
    assert "text" in errors[9]["error"] and "corrupt.png" in errors[10]["error"]
    assert errors[None]["metadata"]["line"] == 7
    assert _strip([r for r in recs if "error" not in r]) == _strip(reference[:3])

    summary = model_vqa_loader.main(args)  # errors are kept by default
    assert summary["answered_now"] == 0 and summary["errors"] == 5
    (images / "later.png").write_bytes((vqa / "images" / "3.png").read_bytes())
    summary = model_vqa_loader.main(args + ["--retry-errors"])
    recs = _answers(out)
    assert [r["question_id"] for r in recs] == [100, 7, 8, 9, 101, 102, None, 10]
    assert "error" not in recs[1] and recs[1]["metadata"]["visual_tokens"] > 0
    assert summary["errors"] == 4


# ----------------------------------------------------------------------------- prompts


def test_textvqa_ocr_line_kept_by_default_dropped_on_request(tmp_path):
    q = {"question_id": 1, "image": "a.jpg",
         "text": "what brand is it?\nReference OCR token: nikon, 5\nAnswer the question using a single word or phrase."}
    _write_jsonl(tmp_path / "q.jsonl", [q, {"question_id": 2, "image": "a.jpg", "text": "short?"}])
    kept = model_vqa_loader.load_questions(str(tmp_path / "q.jsonl"))
    assert kept[0].prompt == q["text"] and kept[1].error is None
    dropped = model_vqa_loader.load_questions(str(tmp_path / "q.jsonl"), drop_ocr=True)
    assert dropped[0].prompt == "what brand is it?\nAnswer the question using a single word or phrase."
    assert "at least 3 lines" in dropped[1].error


def test_duplicate_question_ids_are_separate_questions(tmp_path):
    rows = [{"question_id": "artwork/1.jpg", "image": "artwork/1.jpg", "text": t} for t in ("Yes?", "No?")]
    _write_jsonl(tmp_path / "q.jsonl", rows)
    items = model_vqa_loader.load_questions(str(tmp_path / "q.jsonl"))
    assert [it.occurrence for it in items] == [0, 1] and items[0].key != items[1].key
    rec = common.error_record(items[1], "x", "m", meta={"occurrence": 1})
    assert common.record_key(rec) == items[1].key


def test_sqa_text_only_questions_and_letter_prompt(tiny_ckpt, tmp_path):
    _image(tmp_path / "images" / "1" / "image.png", (50, 40), 1)
    body = "Context: a map.\nWhich is north?\nA. Maine\nB. Texas"
    data = [
        {"id": "1", "image": "1/image.png", "conversations": [{"from": "human", "value": "<image>\n" + body},
                                                             {"from": "gpt", "value": "A"}]},
        {"id": "2", "conversations": [{"from": "human", "value": "Which is a liquid?\nA. milk\nB. rock"}]},
        {"id": "3", "conversations": [{"from": "human", "value": body + model_vqa_science.LETTER_SUFFIX}]},
        {"id": "4", "image": "1/image.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}]},
    ]
    (tmp_path / "q.json").write_text(json.dumps(data))
    items = model_vqa_science.load_questions(str(tmp_path / "q.json"), single_pred_prompt=True)
    assert items[0].prompt == body + model_vqa_science.LETTER_SUFFIX and items[0].image == "1/image.png"
    assert items[1].image is None and items[2].prompt.count("Answer with the option's letter") == 1
    outs = {}
    for bs in ("1", "2"):
        out = tmp_path / f"bs{bs}" / "answers.jsonl"
        model_vqa_science.main(["--model-path", tiny_ckpt, "--question-file", str(tmp_path / "q.json"),
                                "--image-folder", str(tmp_path / "images"), "--answers-file", str(out),
                                "--single-pred-prompt", "--batch-size", bs, *FAST])
        outs[bs] = _answers(out)
    recs = outs["1"]
    assert [r["question_id"] for r in recs] == ["1", "2", "3", "4"] and not any("error" in r for r in recs)
    assert recs[1]["metadata"]["visual_tokens"] == 0 and recs[0]["metadata"]["visual_tokens"] > 0
    assert _strip(outs["2"]) == _strip(recs)  # mixed text-only / image batches


def _tsv(path: Path, rows: list[dict]) -> None:
    cols = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "split", "image"]
    lines = ["\t".join(cols)] + ["\t".join(str(r.get(c, "")) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _b64_png(size, seed) -> str:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_mmbench_prompts_rounds_and_image_references(tiny_ckpt, tmp_path):
    img = _b64_png((40, 30), 0)
    rows = [
        {"index": 0, "question": "图中是什么？", "hint": "一个提示", "A": "猫", "B": "狗", "C": "鸟", "answer": "A",
         "category": "c", "l2-category": "l2", "split": "dev", "image": img},
        {"index": 1, "question": "Which?", "hint": "nan", "A": "x", "B": "y", "answer": "B",
         "category": "c", "l2-category": "l2", "split": "dev", "image": "0"},  # image of row 0
        {"index": 2, "question": "No image?", "A": "x", "B": "y", "answer": "B", "category": "c",
         "l2-category": "l2", "split": "dev", "image": ""},
    ]
    tsv = tmp_path / "mmbench_dev_cn_20231003.tsv"
    _tsv(tsv, rows)
    items = model_vqa_mmbench.load_questions(str(tsv), single_pred_prompt=True, lang="cn", all_rounds=True)
    assert [(it.question_id, it.round_id) for it in items] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert items[0].prompt == "一个提示\n图中是什么？\nA. 猫\nB. 狗\nC. 鸟\n请直接回答选项字母。"
    assert items[1].prompt == "一个提示\n图中是什么？\nA. 狗\nB. 鸟\nC. 猫\n请直接回答选项字母。"
    assert items[1].fields["options"] == ["狗", "鸟", "猫"]
    assert items[3].prompt.startswith("Which?\nA. x") and items[3].image == img
    assert items[5].error and items[6].error
    en = model_vqa_mmbench.load_questions(str(tsv), single_pred_prompt=True, lang="en")
    assert en[1].prompt.endswith("\nAnswer with the option's letter from the given choices directly.")
    assert len(en) == 3

    out = tmp_path / "ans" / "answers.jsonl"
    model_vqa_mmbench.main(["--model-path", tiny_ckpt, "--question-file", str(tsv), "--answers-file", str(out),
                            "--single-pred-prompt", "--lang", "cn", "--all-rounds", "--batch-size", "3", *FAST])
    recs = _answers(out)
    assert [(r["question_id"], r["round_id"]) for r in recs] == [(it.question_id, it.round_id) for it in items]
    assert recs[1]["options"] == ["狗", "鸟", "猫"] and recs[1]["option_char"] == ["A", "B", "C"]
    assert sum("error" in r for r in recs) == 2
    summary = model_vqa_mmbench.main(["--model-path", tiny_ckpt, "--question-file", str(tsv), "--answers-file",
                                      str(out), "--single-pred-prompt", "--lang", "cn", "--all-rounds", *FAST])
    assert summary["answered_now"] == 0 and summary["skipped"] == 7  # rounds are resumed one by one
