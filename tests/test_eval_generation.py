"""Generation drivers (llava.eval.model_vqa*, llava.eval.runs): prompts, answer files, errors,
resuming after a kill, batching and data-parallel runs — on the tiny random checkpoint.
What keeps runs from mixing (identity, lock, refusals) is tested in test_eval_runs.py."""

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
from eval_utils import FAST, answers, bomb_png, loader_args, strip_ids, write_image, write_jsonl
from PIL import Image

from llava.errors import PromptTooLongError
from llava.eval import model_vqa_loader, model_vqa_mmbench, model_vqa_science
from llava.eval.runs import answers_io, questions
from llava.eval.runs.generate import Generator, error_record

ROOT = Path(__file__).resolve().parents[1]


def _loader(tiny_ckpt, d: Path, answers_file, *extra) -> dict:
    return model_vqa_loader.main(loader_args(tiny_ckpt, d, answers_file, *extra))


# ----------------------------------------------------------------------------- answer files


def test_answer_file_format_and_config(reference, vqa, tiny_ckpt):
    assert [r["question_id"] for r in reference] == [100, 101, 102, 103, 104]
    rows = [json.loads(x) for x in (vqa / "questions.jsonl").read_text().splitlines()]
    for r, q in zip(reference, rows):
        assert set(r) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
        assert r["prompt"] == q["text"]  # the original driver's prompt field: the question's text as given
        meta = r["metadata"]
        assert 0 < meta["visual_tokens"] < meta["visual_tokens_uncompressed"]
        assert meta["compression"]["name"] == "globalcom2" and meta["compression"]["retention_ratio"] == 0.25
        assert len(meta["budgets"]) == len(meta["crop_kept"]) == meta["grid"][0] * meta["grid"][1]
    stem_cfg = json.loads((vqa / "ref" / "answers.config.json").read_text())
    dir_cfg = json.loads((vqa / "ref" / "config.json").read_text())
    from llava.eval.runs.checkpoint import checkpoint_identity

    for cfg in (stem_cfg, dir_cfg):
        assert cfg["compression"]["name"] == "globalcom2" and cfg["compression"]["retention_ratio"] == 0.25
        assert cfg["generation"]["max_new_tokens"] == 3 and cfg["generation"]["temperature"] == 0.0
        assert cfg["driver"] == "model_vqa_loader" and cfg["dtype"] == "float32"  # CPU default
        assert cfg["checkpoint"] == checkpoint_identity(tiny_ckpt)
        assert cfg["checkpoint"]["path"] == os.path.realpath(tiny_ckpt)
        assert cfg["questions"]["count"] == 5 and cfg["questions"]["fingerprint"].startswith("sha256:")
    assert stem_cfg["num_chunks"] == 1 and "num_chunks" not in dir_cfg
    # what the scorers and summarize read from it
    from llava.eval.scoring_utils import read_run_config

    fields = read_run_config(str(vqa / "ref" / "answers.jsonl"))
    assert fields["method"] == "globalcom2" and fields["retention_ratio"] == 0.25 and fields["model"]
    assert not (vqa / "ref" / "answers.jsonl.lock").exists()  # released at the end


def test_batch_size_2_equals_batch_size_1(tiny_ckpt, vqa, reference, tmp_path):
    out = tmp_path / "b2.jsonl"
    _loader(tiny_ckpt, vqa, out, "--batch-size", "2")
    assert strip_ids(answers(out)) == strip_ids(reference)


def test_torn_last_line_is_repaired_on_resume(tiny_ckpt, vqa, reference, tmp_path):
    out = tmp_path / "torn" / "answers.jsonl"
    out.parent.mkdir()
    for name in ("answers.config.json", "config.json"):
        (out.parent / name).write_text((vqa / "ref" / name).read_text())
    line = json.dumps(reference[2])
    out.write_text("".join(json.dumps(r) + "\n" for r in reference[:2]) + line[: len(line) // 2])
    assert len(answers_io.read_answers(str(out))) == 2  # the fragment is not an answer
    summary = _loader(tiny_ckpt, vqa, out)
    assert summary["skipped"] == 2 and summary["answered_now"] == 3
    assert strip_ids(answers(out)) == strip_ids(reference)


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    from llava.eval.runs.errors import RunError

    p = tmp_path / "a.jsonl"
    p.write_text('{"question_id": 1}\nnot json\n{"question_id": 2}\n')
    with pytest.raises(RunError, match="a.jsonl:2: corrupt answer line"):
        answers_io.read_answers(str(p), repair=True)
    p.write_text('{"question_id": 1}\n{"question_id": 2}')  # a whole record without its newline is kept
    assert len(answers_io.read_answers(str(p), repair=True)) == 2
    assert p.read_text() == '{"question_id": 1}\n{"question_id": 2}\n'
    p.write_text('{"question_id": 1}\n{"question_id": 2, "te')
    assert len(answers_io.read_answers(str(p), repair=True)) == 1 and p.read_text() == '{"question_id": 1}\n'


def test_kill_and_resume_matches_uninterrupted_run(tiny_ckpt, vqa, reference, tmp_path):
    """A SIGKILL in mid-write (injected by tests/fault_driver.py) leaves two answers, a torn
    line and the dead process's lock file; the resumed run takes the lock over, repairs the
    file and ends with the uninterrupted run's answers."""
    out = tmp_path / "killed" / "answers.jsonl"
    cmd = [sys.executable, str(ROOT / "tests" / "fault_driver.py"), "2", "llava.eval.model_vqa_loader",
           *loader_args(tiny_ckpt, vqa, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    raw = out.read_text()
    assert raw.count("\n") == 2 and not raw.endswith("\n")  # two answers and a torn third line
    lock = Path(str(out) + ".lock")
    assert json.loads(lock.read_text())["pid"] != os.getpid()  # left behind by the dead process
    summary = _loader(tiny_ckpt, vqa, out)
    assert summary["skipped"] == 2 and summary["answered_now"] == 3 and summary["errors"] == 0
    assert strip_ids(answers(out)) == strip_ids(reference)
    assert not lock.exists()
    summary = _loader(tiny_ckpt, vqa, out)  # nothing left: nothing duplicated
    assert summary["answered_now"] == 0 and len(answers(out)) == len(reference)


def test_torchrun_two_processes_equal_single_process(tiny_ckpt, vqa, reference, tmp_path):
    out = tmp_path / "dp" / "answers.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "llava.eval.model_vqa_loader", *loader_args(tiny_ckpt, vqa, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert strip_ids(answers(out)) == strip_ids(reference)
    assert not list(out.parent.glob("*.part-*"))  # the per-rank files were merged away
    assert json.loads((out.parent / "answers.config.json").read_text())["world_size"] == 2
    assert "5 answered, 0 failed" in proc.stdout


def test_chunks_cover_the_question_file(tiny_ckpt, vqa, reference, tmp_path):
    parts = []
    for k in range(2):
        out = tmp_path / f"2_{k}.jsonl"
        _loader(tiny_ckpt, vqa, out, "--num-chunks", "2", "--chunk-idx", str(k))
        parts += answers(out)
    assert strip_ids(parts) == strip_ids(reference)
    assert [len(questions.get_chunk(list(range(7)), 3, k)) for k in range(3)] == [3, 2, 2]
    assert [len(questions.get_chunk(list(range(3)), 5, k)) for k in range(5)] == [1, 1, 1, 0, 0]
    # more chunks than questions: an empty chunk is an empty answers file, not a failure
    out = tmp_path / "7_6.jsonl"
    summary = _loader(tiny_ckpt, vqa, out, "--num-chunks", "7", "--chunk-idx", "6")
    assert out.exists() and out.read_text() == "" and summary["total"] == 0 and summary["errors"] == 0


# ----------------------------------------------------------------------------- errors


def test_errors_are_recorded_and_retried(tiny_ckpt, vqa, reference, tmp_path):
    rows = [json.loads(x) for x in (vqa / "questions.jsonl").read_text().splitlines()[:3]]
    rows.insert(1, {"question_id": 7, "image": "later.png", "text": "Missing?"})
    rows.insert(2, '{"question_id": 8, "image": "0.png", "text": ')  # malformed line
    rows.insert(3, {"question_id": 9, "image": "0.png"})  # no text
    rows.append("[1, 2]")  # not an object, no id
    rows.append({"question_id": 10, "image": "corrupt.png", "text": "Corrupt?"})
    rows.append({"question_id": 11, "image": "bomb.png", "text": "Bomb?"})
    qfile = tmp_path / "q.jsonl"
    write_jsonl(qfile, rows)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        (images / f"{i}.png").write_bytes((vqa / "images" / f"{i}.png").read_bytes())
    (images / "corrupt.png").write_bytes(b"\x89PNG not really")
    bomb_png(images / "bomb.png")  # 20000 × 20000: PIL's DecompressionBombError
    out = tmp_path / "ans" / "answers.jsonl"
    args = ["--model-path", tiny_ckpt, "--question-file", str(qfile), "--image-folder", str(images),
            "--answers-file", str(out), *FAST, "--batch-size", "2"]
    summary = model_vqa_loader.main(args)
    recs = answers(out)
    assert [r["question_id"] for r in recs] == [100, 7, 8, 9, 101, 102, None, 10, 11]
    errors = {r["question_id"]: r for r in recs if "error" in r}
    assert set(errors) == {7, 8, 9, None, 10, 11} and summary["errors"] == 6
    for r in errors.values():
        assert r["text"] == "" and r["metadata"]["error"] == r["error"]
    assert "later.png" in errors[7]["error"] and "not found" in errors[7]["error"]
    assert "malformed question line 3" in errors[8]["error"]
    assert "text" in errors[9]["error"] and "corrupt.png" in errors[10]["error"]
    assert "bomb.png" in errors[11]["error"] and "decompression bomb" in errors[11]["error"]
    assert errors[None]["metadata"]["line"] == 7
    assert strip_ids([r for r in recs if "error" not in r]) == strip_ids(reference[:3])

    (images / "later.png").write_bytes((vqa / "images" / "3.png").read_bytes())
    summary = model_vqa_loader.main(args + ["--keep-errors"])  # errors kept on request
    assert summary["answered_now"] == 0 and summary["errors"] == 6 and answers(out) == recs
    summary = model_vqa_loader.main(args)  # by default they are asked again
    recs = answers(out)
    assert [r["question_id"] for r in recs] == [100, 7, 8, 9, 101, 102, None, 10, 11]
    assert "error" not in recs[1] and recs[1]["metadata"]["visual_tokens"] > 0
    assert summary["skipped"] == 3 and summary["answered_now"] == 1 and summary["errors"] == 5
    assert "decompression bomb" in recs[-1]["error"]  # still an error entry, the run went on


def test_overlong_prompt_is_an_error_entry_and_only_that_one(tiny, model, monkeypatch):
    """The model raises PromptTooLongError for a batch holding an overlong prompt (as the
    model does instead of cutting it); the batch is retried one by one and only that question
    becomes an error entry — also when several overlong ones come in a row."""
    import argparse

    args = argparse.Namespace(conv_mode="vicuna_v1", temperature=0.0, top_p=None, num_beams=1, max_new_tokens=3,
                              image_folder="")
    tokenizer, _, image_processor, _ = tiny
    gen = Generator(args, "tiny", tokenizer, model, image_processor)
    limit = 80
    generate = model.generate

    def strict_generate(input_ids, attention_mask, **kw):
        lengths = attention_mask.sum(dim=1).tolist()
        for b, n in enumerate(lengths):
            if n > limit:
                raise PromptTooLongError(b, n, limit)
        return generate(input_ids, attention_mask=attention_mask, **kw)

    monkeypatch.setattr(model, "generate", strict_generate)
    items = [questions.Item(i, message=("word " * (60 if i in (1, 2, 3) else 1)) + f"question {i}?")
             for i in range(5)]
    recs = gen.answer(items)
    assert [("error" in r) for r in recs] == [False, True, True, True, False]
    assert "prompt too long" in recs[1]["error"] and f"context of {limit}" in recs[1]["error"]
    singles = [gen.answer([it])[0] for it in (items[0], items[4])]
    assert strip_ids([recs[0], recs[4]]) == strip_ids(singles)


def test_overlong_prompt_end_to_end(tiny_ckpt, vqa, tmp_path):
    """Needs the model to raise PromptTooLongError from generate instead of cutting the
    sequence: a checkpoint with a 1000-token context, a short question and one of ~1200 words."""
    from eval_utils import checkpoint_variant

    ckpt = checkpoint_variant(tiny_ckpt, tmp_path / "ctx1000", {"tokenizer_model_max_length": 1000})
    rows = [{"question_id": 1, "image": "2.png", "text": "What color is it?"},
            {"question_id": 2, "image": "2.png", "text": "word " * 1200 + "What color is it?"}]
    write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / "ans" / "answers.jsonl"
    summary = model_vqa_loader.main(["--model-path", ckpt, "--question-file", str(tmp_path / "q.jsonl"),
                                     "--image-folder", str(vqa / "images"), "--answers-file", str(out),
                                     "--batch-size", "2", *FAST])
    recs = answers(out)
    assert recs[0]["metadata"]["visual_tokens"] > 0 and "error" not in recs[0]
    assert "prompt too long" in recs[1]["error"] and "context of 1000" in recs[1]["error"]
    assert summary["errors"] == 1


# ----------------------------------------------------------------------------- prompts


def test_textvqa_ocr_line_kept_by_default_dropped_on_request(tmp_path):
    q = {"question_id": 1, "image": "a.jpg",
         "text": "what brand is it?\nReference OCR token: nikon, 5\nAnswer the question using a single word or phrase."}
    write_jsonl(tmp_path / "q.jsonl", [q, {"question_id": 2, "image": "a.jpg", "text": "short?"}])
    kept = model_vqa_loader.load_questions(str(tmp_path / "q.jsonl"))
    assert kept[0].message == kept[0].prompt == q["text"] and kept[1].error is None
    dropped = model_vqa_loader.load_questions(str(tmp_path / "q.jsonl"), drop_ocr=True)
    assert dropped[0].message == "what brand is it?\nAnswer the question using a single word or phrase."
    assert dropped[0].prompt == q["text"]  # recorded as given, as the release's driver does
    assert "at least 3 lines" in dropped[1].error


def test_duplicate_question_ids_are_separate_questions(tmp_path):
    rows = [{"question_id": "artwork/1.jpg", "image": "artwork/1.jpg", "text": t} for t in ("Yes?", "No?")]
    write_jsonl(tmp_path / "q.jsonl", rows)
    items = model_vqa_loader.load_questions(str(tmp_path / "q.jsonl"))
    assert [it.occurrence for it in items] == [0, 1] and items[0].key != items[1].key
    rec = error_record(items[1], "x", "m")
    assert rec["metadata"]["occurrence"] == 1 and questions.record_key(rec) == items[1].key


def _original_sqa_img_subset(records: list[dict]) -> list:
    """The IMG subset as the original eval_science_qa.py decides it: '<image>' in the prompt."""
    return [r["question_id"] for r in records if "<image>" in r["prompt"]]


def test_sqa_text_only_questions_and_letter_prompt(tiny_ckpt, tmp_path):
    write_image(tmp_path / "images" / "1" / "image.png", (50, 40), 1)
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
    assert items[0].message == body + model_vqa_science.LETTER_SUFFIX and items[0].image == "1/image.png"
    # the original driver's prompt field: "<image>\n" + question + "\n" + instruction
    assert items[0].prompt == "<image>\n" + body + "\nAnswer with the option's letter from the given choices directly."
    assert items[1].image is None and items[1].prompt == items[1].message
    assert items[2].message.count("Answer with the option's letter") == 1
    outs = {}
    for bs in ("1", "2"):
        out = tmp_path / f"bs{bs}" / "answers.jsonl"
        model_vqa_science.main(["--model-path", tiny_ckpt, "--question-file", str(tmp_path / "q.json"),
                                "--image-folder", str(tmp_path / "images"), "--answers-file", str(out),
                                "--single-pred-prompt", "--batch-size", bs, *FAST])
        outs[bs] = answers(out)
    recs = outs["1"]
    assert [r["question_id"] for r in recs] == ["1", "2", "3", "4"] and not any("error" in r for r in recs)
    assert recs[1]["metadata"]["visual_tokens"] == 0 and recs[0]["metadata"]["visual_tokens"] > 0
    assert _original_sqa_img_subset(recs) == ["1", "4"]  # the problems with an image
    assert recs[0]["prompt"] == items[0].prompt
    assert strip_ids(outs["2"]) == strip_ids(recs)  # mixed text-only / image batches


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
    assert items[0].message == "一个提示\n图中是什么？\nA. 猫\nB. 狗\nC. 鸟\n请直接回答选项字母。"
    assert items[1].message == "一个提示\n图中是什么？\nA. 狗\nB. 鸟\nC. 猫\n请直接回答选项字母。"
    # the original driver's prompt field: the question as shown, without the instruction
    assert items[1].prompt == "一个提示\n图中是什么？\nA. 狗\nB. 鸟\nC. 猫"
    # ... and option_char rotates with the options: option_char[i] is options[i]'s letter in the TSV
    assert items[1].fields["options"] == ["狗", "鸟", "猫"] and items[1].fields["option_char"] == ["B", "C", "A"]
    assert items[2].fields["option_char"] == ["C", "A", "B"] and items[0].fields["option_char"] == ["A", "B", "C"]
    assert items[3].message.startswith("Which?\nA. x") and items[3].image == img
    assert items[5].error and items[6].error
    # the original driver's is_none: an option "None" (or NA, nan) ends the options; "3" stays "3"
    rows[0].update(A="3", B="None", C="c")
    rows[1].update(A="4", B="NA", hint="None")
    _tsv(tmp_path / "none.tsv", rows)
    odd = model_vqa_mmbench.load_questions(str(tmp_path / "none.tsv"))
    assert [it.fields["options"] for it in odd] == [["3"], ["4"], ["x", "y"]]
    assert odd[0].prompt == "一个提示\n图中是什么？\nA. 3" and odd[1].prompt == "Which?\nA. 4"
    en = model_vqa_mmbench.load_questions(str(tsv), single_pred_prompt=True, lang="en")
    assert en[1].message.endswith("\nAnswer with the option's letter from the given choices directly.")
    assert en[1].prompt == "Which?\nA. x\nB. y" and len(en) == 3

    out = tmp_path / "ans" / "answers.jsonl"
    model_vqa_mmbench.main(["--model-path", tiny_ckpt, "--question-file", str(tsv), "--answers-file", str(out),
                            "--single-pred-prompt", "--lang", "cn", "--all-rounds", "--batch-size", "3", *FAST,
                            "--keep-errors"])
    recs = answers(out)
    assert [(r["question_id"], r["round_id"]) for r in recs] == [(it.question_id, it.round_id) for it in items]
    assert recs[1]["options"] == ["狗", "鸟", "猫"] and recs[1]["option_char"] == ["B", "C", "A"]
    assert recs[1]["prompt"] == items[1].prompt
    assert sum("error" in r for r in recs) == 2
    summary = model_vqa_mmbench.main(["--model-path", tiny_ckpt, "--question-file", str(tsv), "--answers-file",
                                      str(out), "--single-pred-prompt", "--lang", "cn", "--all-rounds", *FAST,
                                      "--keep-errors"])
    assert summary["answered_now"] == 0 and summary["skipped"] == 7  # rounds are resumed one by one
