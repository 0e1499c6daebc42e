"""The VQA answer normaliser, TextVQA's scorer and the VQAv2 / VizWiz upload converters, on small
hand-worked files in the benchmarks' real formats; expected numbers computed by hand."""

from __future__ import annotations

import json

import pytest
from scorer_files import coverage_line, output_lines, refused, write_json, write_jsonl

from llava.eval import convert_vizwiz_for_submission, convert_vqav2_for_submission, eval_textvqa
from llava.eval.m4c_evaluator import TextVQAAccuracyEvaluator, normalize_answer

# --------------------------------------------------------------------------- normaliser


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Two", "2"), ("the cat.", "cat"), ("A dog", "dog"), ("none", "0"), ("  Ten\tapples\n", "10 apples"),
        ("1,000", "1000"), ("3.5", "3.5"), ("a.b", "ab"), ("Yes!", "yes"), ("man's hat", "man 's hat"),
        ("t-shirt", "t shirt"), ("red - blue", "red blue"),  # "- " present: every "-" removed
        ("dont", "don't"), ("Dont", "don't"), ("isnt it", "isn't it"), ("couldnt've", "couldn't've"),
        ("couldn'tve", "couldn't've"),
        # the original's fixed table, oddities included
        ("aint", "ain't"),
        ("im", "im"), ("Im", "im"), ("ive", "ive"), ("Ive", "ive"),  # capitalised keys never match
        ("id've", "id've"), ("I'd've", "i'd've"),
        ("couldntve", "couldntve"),  # not a key
        ("somebody'd", "somebodyd"),  # the table maps it the wrong way round
        ("its", "its"), ("well", "well"),
    ],
)
def test_vqa_normaliser(raw, expected):
    assert normalize_answer(raw) == expected


def test_period_stripping_stops_after_32():
    # the original passes re.UNICODE (32) as re.sub's count
    assert normalize_answer("yes" + "." * 32) == "yes"
    assert normalize_answer("yes" + "." * 33) == "yes."
    assert normalize_answer("yes" + "." * 40) == "yes" + "." * 8
    # periods before a digit stay and do not count: 19 leading + 13 trailing removed, 7 trailing left
    assert normalize_answer("." * 20 + "3.5" + "." * 20) == ".3.5" + "." * 7


def _soft_by_hand(pred: str, gts: list[str]) -> float:
    """Leave-one-out by hand: drop answer i, count the other nine equal to pred, min(1, n/3); mean."""
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1:]
        accs.append(min(1, others.count(pred) / 3))
    return sum(accs) / len(accs)


def test_soft_accuracy_by_hand():
    ev = TextVQAAccuracyEvaluator()
    x = ["x"] * 10
    # 2 of 10 match: 8 subsets keep both (2/3), 2 keep one (1/3) -> 0.6; 3 -> 0.9; 1 -> 0.3; 4 -> 1.0
    assert ev.score_one("cat", ["cat"] * 2 + x[:8]) == pytest.approx(0.6)
    assert ev.score_one("cat", ["cat"] * 3 + x[:7]) == pytest.approx(0.9)
    assert ev.score_one("cat", ["cat"] + x[:9]) == pytest.approx(0.3)
    assert ev.score_one("cat", ["cat"] * 4 + x[:6]) == 1.0
    # both sides normalised: "Two." == "2" == "two"
    assert ev.score_one("Two.", ["2", "two", "2 "] + ["3"] * 7) == pytest.approx(0.9)
    # same summation order as the original: bit-identical to the by-hand loop
    for gts in (["a", "b", "a", "c", "a", "b", "d", "e", "a", "b"], ["b"] * 5 + ["a"] * 5):
        for pred in "abcd":
            assert ev.score_one(pred, gts) == _soft_by_hand(pred, gts)
    with pytest.raises(ValueError, match="10 ground-truth answers"):
        ev.score_one("a", ["a"] * 9)


# --------------------------------------------------------------------------- TextVQA

SUFFIX = "\nAnswer the question using a single word or phrase."


def _textvqa(tmp_path, answers, data=None):
    data = data or [
        {"question_id": 1, "image_id": "img_a", "question": "What brand is this?", "answers": ["nokia"] * 10},
        # the same question text under another image (the old id-keyed matching dropped it)
        {"question_id": 2, "image_id": "img_b", "question": "What brand is this?",
         "answers": ["apple"] * 3 + ["x"] * 7},
        {"question_id": 3, "image_id": "img_c", "question": "How many cups?", "answers": ["2", "two"] + ["3"] * 8},
        {"question_id": 4, "image_id": "img_d", "question": "What is the NUMBER?", "answers": ["10"] * 10},
    ]
    ann = write_json(tmp_path / "TextVQA_0.5.1_val.json", {"dataset_version": "0.5.1", "data": data})
    return ann, write_jsonl(tmp_path / "answers" / "llava-v1.5-13b.jsonl", answers)


# LLaVA's answers: question_id = image id; question from the prompt
TEXTVQA_ANSWERS = [
    {"question_id": "img_a", "prompt": "What brand is this?\nReference OCR token: NOKIA" + SUFFIX, "text": "Nokia."},
    {"question_id": "img_b", "prompt": "Reference OCR token: apple\nWhat brand is this?" + SUFFIX, "text": "apple"},
    {"question_id": "img_c", "prompt": "How many cups?" + SUFFIX, "text": "Two"},  # 2 lines (OCR line dropped)
    {"question_id": "img_d", "prompt": "OCR tokens: 10 Question: What is the NUMBER? Short answer:", "text": "ten"},
]


def test_textvqa_keys_by_image_and_prompt_question(tmp_path, capsys):
    ann, res = _textvqa(tmp_path, TEXTVQA_ANSWERS)
    out = eval_textvqa.main(["--annotation-file", ann, "--result-file", res, "--score-file",
                             str(tmp_path / "score.json")])
    lines = output_lines(capsys)
    # 1.0 + 0.9 (3 of 10) + 0.6 (2 of 10) + 1.0 -> 87.50
    assert lines[-3:] == [coverage_line(4, 4), "Samples: 4", "Accuracy: 87.50%"]
    assert lines[0] == "llava-v1.5-13b"  # the experiment name, as the original prints it
    assert out["num_samples"] == 4
    rec = json.loads((tmp_path / "score.json").read_text())
    assert rec["score"] == pytest.approx(87.5) and rec["partial"] is False and rec["lenient"] is False
    assert rec["coverage"]["answered"] == 4


def test_textvqa_prompt_rules():
    q = eval_textvqa.question_from_prompt
    assert q("What is IT?\nReference OCR token: a, b" + SUFFIX) == "what is it?"
    assert q("Reference OCR token: a, b\nWhat is it?" + SUFFIX) == "what is it?"
    assert q("What is it?" + SUFFIX) == "what is it?"
    assert q("OCR tokens: a b Question: What is it? Short answer:") == "what is it?"
    with pytest.raises(ValueError, match="4 lines"):
        q("<image>\nWhat is it?\nReference OCR token: a" + SUFFIX)
    with pytest.raises(ValueError, match="1 lines"):
        q("What is it?")
    assert eval_textvqa.question_from_prompt_lenient("<image>\nWhat is it?\nReference OCR token: a" + SUFFIX) \
        == "what is it?"


def test_textvqa_shared_key_takes_the_later_annotation(tmp_path, capsys):
    data = [{"question_id": 1, "image_id": "i", "question": "Q?", "answers": ["a"] * 10},
            {"question_id": 2, "image_id": "i", "question": "q?", "answers": ["b"] * 10}]
    answers = [{"question_id": "i", "prompt": "Q?" + SUFFIX, "text": "b"},
               {"question_id": "i", "prompt": "q?" + SUFFIX, "text": "b"}]
    ann, res = _textvqa(tmp_path, answers, data)
    # two annotations share (image, question): two answers expected, both scored against the later one
    assert eval_textvqa.main(["--annotation-file", ann, "--result-file", res])["accuracy"] == 100.0
    assert output_lines(capsys)[-1] == "Accuracy: 100.00%"


def test_textvqa_refusals_and_flags(tmp_path, capsys):
    ann, res = _textvqa(tmp_path, TEXTVQA_ANSWERS[:3])
    err = refused(eval_textvqa.main, ["--annotation-file", ann, "--result-file", res], capsys)
    assert "1 of 4 questions have no answer (first: img_d: 'what is the number?')" in err
    assert "--allow-partial" in err
    score = tmp_path / "s.json"
    out = eval_textvqa.main(["--annotation-file", ann, "--result-file", res, "--allow-partial",
                             "--score-file", str(score)])
    assert out["accuracy"] == pytest.approx(100 * 2.5 / 3)
    assert output_lines(capsys)[-1] == "Accuracy: 83.33% (partial)"
    rec = json.loads(score.read_text())
    assert rec["partial"] is True and rec["coverage"]["without_answer"] == 1

    # ids that are TextVQA's question ids (not image ids): unknown to the original; --lenient matches them
    by_qid = [{**a, "question_id": i + 1} for i, a in enumerate(TEXTVQA_ANSWERS)]
    ann, res = _textvqa(tmp_path, by_qid)
    err = refused(eval_textvqa.main, ["--annotation-file", ann, "--result-file", res], capsys)
    assert "4 answers with ids unknown to the benchmark (first: 1: 'what brand is this?'" in err
    assert eval_textvqa.main(["--annotation-file", ann, "--result-file", res, "--lenient"])["accuracy"] == 87.5
    assert output_lines(capsys)[-1] == "Accuracy: 87.50% (lenient)"

    bad = [{**TEXTVQA_ANSWERS[0], "prompt": "<image>\n" + TEXTVQA_ANSWERS[0]["prompt"]}] + TEXTVQA_ANSWERS[1:]
    ann, res = _textvqa(tmp_path, bad)
    assert "answer 'img_a': a prompt of 4 lines" in refused(
        eval_textvqa.main, ["--annotation-file", ann, "--result-file", res], capsys)


def test_textvqa_result_dir(tmp_path, capsys):
    ann, _ = _textvqa(tmp_path, TEXTVQA_ANSWERS)
    write_jsonl(tmp_path / "answers" / "b-model.jsonl", [{**a, "text": "no"} for a in TEXTVQA_ANSWERS])
    (tmp_path / "answers" / "notes.txt").write_text("x")
    out = eval_textvqa.main(["--annotation-file", ann, "--result-dir", str(tmp_path / "answers")])
    assert [r["accuracy"] for r in out] == [0.0, 87.5]
    lines = output_lines(capsys)
    # one block per file, in name order, each ending with its Accuracy line
    assert lines[0] == "b-model" and lines[3] == "Accuracy: 0.00%"
    assert lines[4] == "llava-v1.5-13b" and lines[7] == "Accuracy: 87.50%" and lines[8] == "Skipping notes.txt"


# --------------------------------------------------------------------------- VQAv2


def _vqav2_dir(tmp_path, answers):
    d = tmp_path / "vqav2"
    split = "llava_vqav2_mscoco_test-dev2015"
    test = [{"question_id": i, "image": f"COCO_test2015_{i:012d}.jpg", "text": "q", "category": "default"}
            for i in (11, 12, 13, 14)]
    write_jsonl(d / "llava_vqav2_mscoco_test2015.jsonl", test)
    write_jsonl(d / f"{split}.jsonl", test[:3])
    write_jsonl(d / "answers" / split / "llava-v1.5-13b" / "merge.jsonl", answers)
    return d, split


def test_vqav2_original_command_line(tmp_path, capsys):
    answers = [{"question_id": 11, "text": "Two"}, {"question_id": 12, "text": "Yes."},
               {"question_id": 13, "text": "aint"}]
    d, split = _vqav2_dir(tmp_path, answers)
    convert_vqav2_for_submission.main(["--split", split, "--ckpt", "llava-v1.5-13b", "--dir", str(d)])
    upload = d / "answers_upload" / split / "llava-v1.5-13b.json"
    # every test2015 question, "" for those not in test-dev; json.dump's default formatting
    assert upload.read_text() == json.dumps([{"question_id": 11, "answer": "2"}, {"question_id": 12, "answer": "yes"},
                                             {"question_id": 13, "answer": "ain't"}, {"question_id": 14, "answer": ""}])
    assert coverage_line(3, 3) in output_lines(capsys)

    # the same with explicit files
    dst = tmp_path / "up.json"
    convert_vqav2_for_submission.main(["--src", str(d / "answers" / split / "llava-v1.5-13b" / "merge.jsonl"),
                                       "--test-split", str(d / "llava_vqav2_mscoco_test2015.jsonl"),
                                       "--dst", str(dst), "--question-file", str(d / f"{split}.jsonl")])
    assert dst.read_text() == upload.read_text()


def test_vqav2_refuses_partial_and_foreign(tmp_path, capsys):
    d, split = _vqav2_dir(tmp_path, [{"question_id": 11, "text": "a"}, {"question_id": 12, "text": "b"}])
    err = refused(convert_vqav2_for_submission.main, ["--split", split, "--ckpt", "llava-v1.5-13b", "--dir", str(d)],
                  capsys)
    assert "refusing to convert" in err and "1 of 3 questions have no answer (first: 13)" in err
    assert not (d / "answers_upload").exists()
    convert_vqav2_for_submission.main(["--split", split, "--ckpt", "llava-v1.5-13b", "--dir", str(d),
                                       "--allow-partial"])
    d, split = _vqav2_dir(tmp_path, [{"question_id": i, "text": "a"} for i in (11, 12, 13, 99)])
    assert "1 answer with ids unknown to the benchmark (first: 99)" in refused(
        convert_vqav2_for_submission.main, ["--split", split, "--ckpt", "llava-v1.5-13b", "--dir", str(d)], capsys)


# --------------------------------------------------------------------------- VizWiz


def _vizwiz(tmp_path, answers):
    ann = write_jsonl(tmp_path / "llava_test.jsonl", [
        {"question_id": i, "image": f"VizWiz_test_{i:08d}.jpg", "text": "q"} for i in range(4)])
    return ann, write_jsonl(tmp_path / "answers.jsonl", answers)


def test_vizwiz_only_normalises(tmp_path, capsys):
    ann, res = _vizwiz(tmp_path, [
        {"question_id": 0, "text": "Unanswerable"}, {"question_id": 1, "text": "It is unanswerable."},
        {"question_id": 2, "text": "cannot answer"}, {"question_id": 3, "text": "The Red car"}])
    out = tmp_path / "up" / "vizwiz.json"
    convert_vizwiz_for_submission.main(["--annotation-file", ann, "--result-file", res,
                                        "--result-upload-file", str(out)])
    assert out.read_text() == json.dumps([
        {"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"},
        {"image": "VizWiz_test_00000001.jpg", "answer": "it is unanswerable"},  # not rewritten
        {"image": "VizWiz_test_00000002.jpg", "answer": "cannot answer"},
        {"image": "VizWiz_test_00000003.jpg", "answer": "red car"}])
    assert coverage_line(4, 4) in output_lines(capsys)


def test_vizwiz_requires_every_answer(tmp_path, capsys):
    ann, res = _vizwiz(tmp_path, [{"question_id": i, "text": "x"} for i in range(3)]
                       + [{"question_id": 3, "text": "", "error": "image file not found"}])
    out = tmp_path / "vizwiz.json"
    argv = ["--annotation-file", ann, "--result-file", res, "--result-upload-file", str(out)]
    err = refused(convert_vizwiz_for_submission.main, argv, capsys)
    assert "1 error entry (first: 3)" in err and not out.exists()
    convert_vizwiz_for_submission.main(argv + ["--allow-partial"])
    assert json.loads(out.read_text())[3] == {"image": "VizWiz_test_00000003.jpg", "answer": ""}
