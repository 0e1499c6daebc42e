"""Hand-worked tests of the offline scorers (llava/eval/*), their CLIs and the summary table."""

from __future__ import annotations

import json

import pytest

from llava.eval import (
    convert_mmbench_for_submission,
    convert_mmvet_for_eval,
    convert_vizwiz_for_submission,
    convert_vqav2_for_submission,
    eval_gqa,
    eval_mmbench,
    eval_mme,
    eval_mmvet,
    eval_pope,
    eval_science_qa,
    eval_textvqa,
    paper_results,
    scoring_utils,
    summarize,
)
from llava.eval.m4c_evaluator import TextVQAAccuracyEvaluator, normalize_answer, soft_scores


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


def last_line(capsys):
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return lines[-1]


# --------------------------------------------------------------------------- VQA normalisation


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Two", "2"),
        ("the cat.", "cat"),
        ("A dog", "dog"),
        ("dont", "don't"),
        ("Don't", "don't"),
        ("isnt it", "isn't it"),
        ("couldnt've", "couldn't've"),
        ("1,000", "1000"),
        ("3.5", "3.5"),
        ("Yes!", "yes"),
        ("man's hat", "man 's hat"),
        ("t-shirt", "t shirt"),
        ("red - blue", "red blue"),
        ("  Ten\tapples\n", "10 apples"),
        ("none", "0"),
        ("its", "its"),
    ],
)
def test_vqa_normalisation(raw, expected):
    assert normalize_answer(raw) == expected


def test_soft_accuracy_leave_one_out_by_hand():
    others = ["x"] * 8
    # 2 of 10 match: 8 subsets keep both (2/3), 2 subsets keep one (1/3) -> (8*2/3 + 2*1/3) / 10 = 0.6
    assert soft_scores(["cat", "cat"] + others)["cat"] == pytest.approx(0.6)
    # 3 of 10: 7 subsets keep 3 (1.0), 3 keep 2 (2/3) -> (7 + 2) / 10 = 0.9
    assert soft_scores(["cat"] * 3 + ["x"] * 7)["cat"] == pytest.approx(0.9)
    # 1 of 10: 9 subsets keep it (1/3), 1 drops it (0) -> 0.3
    assert soft_scores(["cat"] + ["x"] * 9)["cat"] == pytest.approx(0.3)
    # 4 of 10: every subset keeps >= 3 -> 1.0
    assert soft_scores(["cat"] * 4 + ["x"] * 6)["cat"] == pytest.approx(1.0)

    ev = TextVQAAccuracyEvaluator()
    # normalisation applies to both sides: "Two." == "2" == "two"
    gts = ["2", "two", "2 "] + ["3"] * 7
    assert ev.score_one("Two.", gts) == pytest.approx(0.9)
    assert ev.score_one("dog", gts) == 0.0
    assert ev.eval_pred_list([{"pred_answer": "two", "gt_answers": gts},
                              {"pred_answer": "4", "gt_answers": gts}]) == pytest.approx(0.45)


# --------------------------------------------------------------------------- TextVQA


def test_textvqa_cli(tmp_path, capsys):
    ann = write_json(tmp_path / "TextVQA_0.5.1_val.json", {"data": [
        {"question_id": 11, "image_id": "img_a", "question": "How many cups?",
         "answers": ["2", "two"] + ["3"] * 8},
        {"question_id": 12, "image_id": "img_b", "question": "What brand is this?",
         "answers": ["nokia"] * 10},
    ]})
    res = write_jsonl(tmp_path / "answers.jsonl", [
        {"question_id": 11, "prompt": "How many cups?\nReference OCR token: x\nAnswer the question using a "
                                      "single word or phrase.", "text": "Two"},
        # unknown id: matched by (image id, question) parsed from the prompt
        {"question_id": "zzz", "prompt": "What brand is this?\nAnswer the question using a single word or phrase.",
         "text": "Nokia.", "metadata": {"image": "train_images/img_b.jpg"}},
    ])
    out = eval_textvqa.main(["--annotation-file", ann, "--result-file", res])
    # (0.6 + 1.0) / 2
    assert last_line(capsys) == "Accuracy: 80.00%"
    assert out["num_samples"] == 2


def test_textvqa_question_from_prompt():
    assert eval_textvqa.question_from_prompt("Reference OCR token: a, b\nWhat is it?\nAnswer briefly") == "what is it?"
    assert eval_textvqa.question_from_prompt("OCR tokens: a b Question: What is it? Short answer:") == "what is it?"


# --------------------------------------------------------------------------- POPE


@pytest.mark.parametrize(
    "text, expected",
    [("No, there is not.", "no"), ("Yes.", "yes"), ("There is a dog.", "yes"), ("Not sure", "no"),
     ("Yes. There is no cat elsewhere.", "yes"), ("nobody knows", "yes"), ("NO", "no")],
)
def test_pope_parsing(text, expected):
    assert eval_pope.parse_yes_no(text) == expected


def test_pope_metrics_by_hand():
    m = eval_pope.binary_metrics(["yes", "yes", "no", "yes", "no", "no"], ["yes", "yes", "yes", "no", "no", "no"])
    assert (m["TP"], m["FP"], m["TN"], m["FN"]) == (2, 1, 2, 1)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["yes_ratio"] == pytest.approx(0.5)


def test_pope_cli(tmp_path, capsys):
    ann_dir = tmp_path / "coco"
    labels = {
        "adversarial": ["yes", "yes", "yes", "no", "no", "no"],
        "random": ["yes", "no"],
        "popular": ["yes", "no"],
    }
    answers = {
        "adversarial": ["Yes.", "Yes, there is.", "No.", "There is a cat.", "No, there is not.", "Not sure"],
        "random": ["Yes", "no"],
        "popular": ["Yes", "Yes"],
    }
    questions, results = [], []
    qid = 0
    for cat, labs in labels.items():
        rows = []
        for i, lab in enumerate(labs):
            rows.append({"question_id": i + 1, "image": f"COCO_val2014_{cat}_{i}.jpg",
                         "text": f"Is there a thing {i} in the image?", "label": lab})
            qid += 1
            questions.append({"question_id": qid, "image": f"COCO_val2014_{cat}_{i}.jpg",
                              "text": f"Is there a thing {i} in the image?\nAnswer the question using a single "
                                      f"word or phrase.", "category": cat})
            results.append({"question_id": qid, "text": answers[cat][i]})
        write_jsonl(ann_dir / f"coco_pope_{cat}.json", rows)
    q = write_jsonl(tmp_path / "llava_pope_test.jsonl", questions)
    r = write_jsonl(tmp_path / "answers.jsonl", results[::-1])  # order must not matter
    out = eval_pope.main(["--annotation-dir", str(ann_dir), "--question-file", q, "--result-file", r])
    # F1: adversarial 2/3 (worked above), random 1.0, popular P=1/2 R=1 -> 2/3; mean 7/9
    assert last_line(capsys) == "POPE F1 (mean over 3 splits): 77.78"
    assert out["per_category"]["random"]["f1"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- ScienceQA


@pytest.mark.parametrize(
    "text, expected",
    [("A", "A"), ("B.", "B"), ("C. the sun", "C"), ("The answer is D.", "D"), ("(A)", "A"), ("B) two", "B"),
     ("A cat", "FAILED"), ("the answer is a cat", "FAILED"), ("I don't know", "FAILED"),
     ("The answer is A or the answer is B", "FAILED")],
)
def test_sqa_letter_parsing(text, expected):
    assert eval_science_qa.parse_letter(text) == expected


def test_sqa_cli(tmp_path, capsys):
    base = tmp_path / "scienceqa"
    problems = {
        "1": {"question": "q1", "choices": ["x", "y"], "answer": 0, "image": "image.png", "split": "test"},
        "2": {"question": "q2", "choices": ["x", "y"], "answer": 1, "image": "image.png", "split": "test"},
        "3": {"question": "q3", "choices": ["x", "y", "z"], "answer": 2, "image": None, "split": "test"},
        "4": {"question": "q4", "choices": ["x", "y"], "answer": 0, "image": "image.png", "split": "test"},
        "5": {"question": "q5", "choices": ["x", "y"], "answer": 0, "image": "image.png", "split": "train"},
        "6": {"question": "q6", "choices": ["x", "y"], "answer": 1, "image": None, "split": "test"},
    }
    write_json(base / "problems.json", problems)
    write_json(base / "pid_splits.json", {"test": ["1", "2", "3", "4", "6"], "train": ["5"]})
    res = write_jsonl(tmp_path / "answers.jsonl", [
        {"question_id": "1", "text": "A."},                 # right (image)
        {"question_id": "2", "text": "The answer is A."},   # wrong (image)
        {"question_id": "3", "text": "C"},                  # right (no image)
        {"question_id": "4", "text": "I don't know"},       # FAILED (image)
        {"question_id": "6", "text": "C"},                  # C is not an option of a 2-choice problem
        {"question_id": "5", "text": "A"},                  # train split: ignored
    ])
    out_file, out_res = tmp_path / "out" / "o.jsonl", tmp_path / "out" / "r.json"
    out = eval_science_qa.main(["--base-dir", str(base), "--result-file", res, "--output-file", str(out_file),
                                "--output-result", str(out_res)])
    assert last_line(capsys) == "IMG-Accuracy: 33.33%"
    assert out["accuracy"] == pytest.approx(40.0)
    recs = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert [r["pred"] for r in recs] == ["A", "A", "C", "FAILED", "C"]
    assert recs[4]["pred_idx"] == -1 and not recs[4]["correct"]
    summary = json.loads(out_res.read_text())
    assert summary["img_total"] == 3 and summary["img_correct"] == 1


# --------------------------------------------------------------------------- GQA


def test_gqa_normalisation():
    assert eval_gqa.normalize_prediction("Yes.") == "yes"
    assert eval_gqa.normalize_prediction(" Left. \n") == "left"
    assert eval_gqa.normalize_prediction("3.5") == "3.5"


def test_gqa_cli(tmp_path, capsys):
    qs = write_json(tmp_path / "testdev_balanced_questions.json", {
        "201": {"answer": "yes", "types": {"structural": "verify"}},
        "202": {"answer": "table", "types": {"structural": "query"}},
        "203": {"answer": "sofa", "types": {"structural": "query"}},
    })
    preds = write_jsonl(tmp_path / "merge.jsonl", [
        {"question_id": "201", "text": "Yes."},
        {"question_id": 202, "text": "Table"},
        {"question_id": "203", "text": "chair."},
    ])
    out = eval_gqa.main(["--questions", qs, "--predictions", preds])
    assert last_line(capsys) == "GQA accuracy: 66.67%"
    assert out["by_structural_type"] == {"query": 50.0, "verify": 100.0}

    conv = tmp_path / "testdev_balanced_predictions.json"
    eval_gqa.main(["--predictions", preds, "--convert-only", str(conv)])
    assert json.loads(conv.read_text()) == [{"questionId": "201", "prediction": "yes"},
                                            {"questionId": "202", "prediction": "table"},
                                            {"questionId": "203", "prediction": "chair"}]


# --------------------------------------------------------------------------- MME


def test_mme_parsing():
    assert eval_mme.parse_yes_no("Yes") == "yes"
    assert eval_mme.parse_yes_no("No, it is not.") == "no"
    assert eval_mme.parse_yes_no("yes, there is") == "yes"
    assert eval_mme.parse_yes_no("There is a dog") == "other"


def test_mme_cli_acc_plus_pairing(tmp_path, capsys):
    gt = tmp_path / "eval_tool" / "Your_Results"
    gt.mkdir(parents=True)
    (gt / "existence.txt").write_text(
        "img1.jpg\tIs there a dog in this image? Please answer yes or no.\tYes\n"
        "img1.jpg\tIs there a cat in this image? Please answer yes or no.\tNo\n"
        "img2.jpg\tIs there a car in this image?  Please answer yes or no.\tYes\n"  # released double space
        "img2.jpg\tIs there a bus in this image? Please answer yes or no.\tNo\n")
    (gt / "code_reasoning.txt").write_text(
        "0001.png\tIs the output 3? Please answer yes or no.\tYes\n"
        "0001.png\tIs the output 4? Please answer yes or no.\tNo\n")
    questions, answers = [], []
    for sub, img, q, a in [
        ("existence", "img1.jpg", "Is there a dog in this image?", "Yes"),
        ("existence", "img1.jpg", "Is there a cat in this image?", "No"),
        ("existence", "img2.jpg", "Is there a car in this image?", "Yes, there is."),
        ("existence", "img2.jpg", "Is there a bus in this image?", "Yes"),    # wrong: image 2 fails acc+
        ("code_reasoning", "0001.png", "Is the output 3?", "yes"),
        ("code_reasoning", "0001.png", "Is the output 4?", "No."),
    ]:
        qid = f"{sub}/{img}"
        text = f"{q} Please answer yes or no."
        questions.append({"question_id": qid, "image": qid, "text": text, "category": sub})
        answers.append({"question_id": qid, "prompt": text, "text": a})
    q = write_jsonl(tmp_path / "llava_mme.jsonl", questions)
    r = write_jsonl(tmp_path / "answers.jsonl", answers)
    out_dir = tmp_path / "results"
    out = eval_mme.main(["--gt-dir", str(tmp_path / "eval_tool"), "--question-file", q, "--result-file", r,
                         "--write-results-dir", str(out_dir)])
    # existence: acc 3/4 = 75, acc+ 1/2 = 50 -> 125
    assert last_line(capsys) == "MME perception: 125.00"
    assert out["per_task"]["existence"]["acc"] == pytest.approx(75.0)
    assert out["per_task"]["existence"]["acc_plus"] == pytest.approx(50.0)
    assert out["cognition"] == pytest.approx(200.0)
    lines = (out_dir / "existence.txt").read_text().splitlines()
    assert lines[2].split("\t") == ["img2.jpg", "Is there a car in this image?  Please answer yes or no.", "Yes",
                                    "Yes, there is."]


# --------------------------------------------------------------------------- MMBench


@pytest.mark.parametrize(
    "text, expected",
    [("A", "A"), ("B.", "B"), ("(C)", "C"), ("The answer is B.", "B"), ("选项C", "C"), ("答案：D", "D"),
     ("Ａ", "A"), ("D: fish", "D"), ("I choose B", "B"), ("dog", "B"), ("A dog is on the left", "FAILED"),
     ("E", "FAILED"), ("A or B", "FAILED"), ("A is right", "A")],
)
def test_mmbench_letter_parsing(text, expected):
    options = {"A": "cat", "B": "dog", "C": "fish", "D": "bird"}
    assert eval_mmbench.parse_choice(text, options) == expected


def _mmbench_tsv(path):
    import pandas as pd

    rows = []
    base = ["cat", "dog", "fish", "bird"]
    for k in range(4):  # question 0 and its three circular copies; the answer is "dog"
        opts = base[k:] + base[:k]
        rows.append({"index": k * 1_000_000, "question": "Which animal barks?", "hint": "",
                     "A": opts[0], "B": opts[1], "C": opts[2], "D": opts[3],
                     "answer": "ABCD"[opts.index("dog")], "category": "animals", "l2-category": "perception",
                     "split": "dev", "image": "aW1n"})
    for k, opts in enumerate((["yes", "no"], ["no", "yes"])):  # two options: C and D empty
        rows.append({"index": 1 + k * 1_000_000, "question": "Is it day?", "hint": "", "A": opts[0],
                     "B": opts[1], "C": "", "D": "", "answer": "AB"[opts.index("yes")], "category": "time",
                     "l2-category": "reasoning", "split": "dev", "image": "aW1n"})
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return str(path)


def test_mmbench_cli_circular(tmp_path, capsys):
    import pandas as pd

    tsv = _mmbench_tsv(tmp_path / "mmbench_dev_20230712.tsv")
    res = write_jsonl(tmp_path / "answers.jsonl", [
        {"question_id": 0, "text": "B"},                    # right
        {"question_id": 1000000, "text": "The answer is A"},  # right
        {"question_id": 2000000, "text": "(D)"},             # right
        {"question_id": 3000000, "text": "答案：A"},          # wrong (dog is C): 3 of 4 -> question wrong
        {"question_id": 1, "text": "A."},                    # right
        {"question_id": 1000001, "text": "yes"},             # right, by option text
    ])
    xlsx = tmp_path / "upload" / "sub.xlsx"
    out = eval_mmbench.main(["--annotation-file", tsv, "--result-file", res, "--upload-xlsx", str(xlsx)])
    assert last_line(capsys) == "MMBench CircularEval accuracy: 50.00%"
    assert out["benchmark"] == "mmbench"
    assert out["single_accuracy"] == pytest.approx(500 / 6)
    assert out["per_category"] == {"animals": 0.0, "time": 100.0}
    sub = pd.read_excel(xlsx, engine="openpyxl")
    assert "image" not in sub.columns and "prediction" in sub.columns
    assert list(sub.columns).index("prediction") == list(sub.columns).index("D") + 1
    assert sub.loc[sub["index"] == 3000000, "prediction"].item() == "答案：A"


def test_mmbench_in_process_rounds_and_missing_rotation(tmp_path):
    tsv = _mmbench_tsv(tmp_path / "mmbench_dev_cn_20231003.tsv")
    # question 1 answered with in-process rotations (round_id) of the original row only
    res = write_jsonl(tmp_path / "answers.jsonl", [
        {"question_id": 1, "round_id": 0, "text": "A"},
        {"question_id": 1, "round_id": 1, "text": "B", "options": ["no", "yes"]},
        {"question_id": 0, "text": "B"},  # rotations 1e6..3e6 unanswered -> counted wrong
    ])
    out = eval_mmbench.evaluate(tsv, res)
    assert out["num_questions"] == 2 and out["num_incomplete"] == 2
    assert out["circular_accuracy"] == 0.0
    res2 = write_jsonl(tmp_path / "answers2.jsonl", [
        {"question_id": 1, "round_id": 0, "text": "A"},
        {"question_id": 1, "round_id": 1, "text": "B"},
        {"question_id": 1000001, "text": "B"},
    ])
    assert eval_mmbench.evaluate(tsv, res2)["circular_accuracy"] == 100.0


# --------------------------------------------------------------------------- converters


def test_convert_vqav2(tmp_path, capsys):
    split = write_jsonl(tmp_path / "llava_vqav2_mscoco_test2015.jsonl",
                        [{"question_id": i, "image": f"{i}.jpg", "text": "q"} for i in (1, 2, 3)])
    src = write_jsonl(tmp_path / "merge.jsonl", [{"question_id": 1, "text": "Two"}, {"question_id": 3, "text": "Yes."}])
    dst = tmp_path / "up" / "vqav2.json"
    convert_vqav2_for_submission.main(["--src", src, "--test-split", split, "--dst", str(dst)])
    assert json.loads(dst.read_text()) == [{"question_id": 1, "answer": "2"}, {"question_id": 2, "answer": ""},
                                           {"question_id": 3, "answer": "yes"}]


def test_convert_vizwiz(tmp_path):
    ann = write_jsonl(tmp_path / "llava_test.jsonl", [
        {"question_id": i, "image": f"VizWiz_test_{i:08d}.jpg", "text": "q"} for i in range(4)])
    res = write_jsonl(tmp_path / "ans.jsonl", [
        {"question_id": 0, "text": "Unanswerable"}, {"question_id": 1, "text": "It is unanswerable."},
        {"question_id": 2, "text": "The Red car"}])
    out = tmp_path / "vizwiz.json"
    convert_vizwiz_for_submission.main(["--annotation-file", ann, "--result-file", res,
                                        "--result-upload-file", str(out)])
    assert json.loads(out.read_text()) == [
        {"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"},
        {"image": "VizWiz_test_00000001.jpg", "answer": "unanswerable"},
        {"image": "VizWiz_test_00000002.jpg", "answer": "red car"},
        {"image": "VizWiz_test_00000003.jpg", "answer": ""},
    ]


def test_convert_mmvet(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"question_id": 0, "text": "x"}, {"question_id": 17, "text": "y"}])
    dst = tmp_path / "results.json"
    convert_mmvet_for_eval.main(["--src", src, "--dst", str(dst)])
    assert json.loads(dst.read_text()) == {"v1_0": "x", "v1_17": "y"}


# --------------------------------------------------------------------------- input errors


def test_missing_file_message(tmp_path, capsys):
    missing = str(tmp_path / "textvqa" / "TextVQA_0.5.1_val.json")
    with pytest.raises(SystemExit) as exc:
        eval_textvqa.main(["--annotation-file", missing, "--result-file", missing])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"error: annotation file not found: {missing}" in err
    assert "playground/data/eval/README.md" in err


def test_malformed_jsonl_reports_file_and_line(tmp_path, capsys):
    qs = write_json(tmp_path / "q.json", {"1": {"answer": "yes"}})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": "1", "text": "yes"}\n{"question_id": 2, "text": \n')
    with pytest.raises(SystemExit):
        eval_gqa.main(["--questions", qs, "--predictions", str(bad)])
    assert f"{bad}:2: malformed JSON line" in capsys.readouterr().err


# --------------------------------------------------------------------------- score records + summary


def test_score_file_and_summarize_average(tmp_path, capsys):
    # uncompressed run: method/ratio from config.json next to the answers
    base_dir = tmp_path / "textvqa" / "answers" / "full"
    write_json(base_dir / "config.json", {"compression": None, "model": "llava-v1.6-vicuna-7b"})
    ann = write_json(tmp_path / "ann.json", {"data": [
        {"question_id": i, "image_id": f"i{i}", "question": f"q{i}", "answers": ["a"] * 10} for i in range(5)]})
    res = write_jsonl(base_dir / "answers.jsonl", [{"question_id": i, "prompt": f"q{i}", "text": "a" if i < 3 else "b"}
                                                    for i in range(5)])
    eval_textvqa.main(["--annotation-file", ann, "--result-file", res,
                       "--score-file", str(base_dir / "score_textvqa.json")])
    rec = json.loads((base_dir / "score_textvqa.json").read_text())
    assert {"benchmark", "metric", "score", "method", "retention_ratio", "model", "num_samples", "result_file",
            "created", "details"} <= set(rec)
    assert (rec["benchmark"], rec["score"], rec["method"], rec["retention_ratio"], rec["model"]) == (
        "textvqa", 60.0, "uncompressed", 1.0, "llava-v1.6-vicuna-7b")

    # other numbers written by hand (record fields, or config.json next to the score file)
    def record(path, bench, score, **kw):
        scoring_utils.main(["--benchmark", bench, "--score", str(score), "--score-file", str(path),
                            *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in kw.items()), [])])

    record(base_dir / "score_pope.json", "pope", 80.0)
    record(base_dir / "score_mme.json", "mme", 1500.0)
    comp = tmp_path / "gc2"
    write_json(comp / "config.json", {"compression": {"name": "globalcom2", "retention_ratio": 0.25},
                                      "model": "llava-v1.6-vicuna-7b"})
    record(comp / "score_textvqa.json", "textvqa", 54.0)  # 90 %
    record(comp / "score_pope.json", "pope", 84.0)  # 105 %
    record(comp / "score_mme.json", "mme", 1350.0)  # 90 %
    capsys.readouterr()
    csv_out = tmp_path / "table.csv"
    rows = summarize.main(["--results-dir", str(tmp_path), "--csv", str(csv_out)])
    by_key = {(r["method"], r["retention_ratio"]): r for r in rows}
    assert by_key[("uncompressed", 1.0)]["average"] == pytest.approx(100.0)
    assert by_key[("globalcom2", 0.25)]["average"] == pytest.approx((90 + 105 + 90) / 3)
    assert by_key[("globalcom2", 0.25)]["n_average"] == 3
    assert "globalcom2" in csv_out.read_text()
    # relative to the paper's 7B baseline instead: TextVQA 54/61.3, POPE 84/86.5, MME 1350/1519
    rows = summarize.main(["--results-dir", str(tmp_path), "--baseline", "paper-7b"])
    gc = next(r for r in rows if r["method"] == "globalcom2")
    assert gc["average"] == pytest.approx(100 * (54 / 61.3 + 84 / 86.5 + 1350 / 1519.0) / 3)


def test_paper_averages_reproduce_published():
    base = paper_results.UNCOMPRESSED_7B
    published = paper_results.AVERAGES_7B["globalcom2"]
    assert set(published) == {0.75, 0.50, 0.25, 0.10}
    for ratio, scores in paper_results.GLOBALCOM2_7B.items():
        avg, n = paper_results.relative_average(scores, base)
        assert n == 10
        assert round(avg, 1) == published[ratio]
    assert paper_results.relative_average(base, base) == (100.0, 10)


def test_summarize_paper_cli(capsys):
    rows = summarize.main(["--paper"])
    got = [(r["method"], r["retention_ratio"], round(r["average"], 1)) for r in rows if "7b" in r["model"]]
    assert got == [("uncompressed", 1.0, 100.0), ("globalcom2", 0.75, 98.9), ("globalcom2", 0.5, 98.7),
                   ("globalcom2", 0.25, 96.9), ("globalcom2", 0.1, 91.8)]
    assert any(r["model"].endswith("13b") and r["scores"]["mme"] == 1575.9 for r in rows)
    out = capsys.readouterr().out
    assert "98.9%" in out and "1519.0" in out


def test_every_cli_has_help(capsys):
    for mod in (eval_textvqa, eval_pope, eval_science_qa, eval_gqa, eval_mme, eval_mmbench, summarize,
                convert_vqav2_for_submission, convert_vizwiz_for_submission, convert_mmvet_for_eval,
                convert_mmbench_for_submission, eval_mmvet, scoring_utils):
        with pytest.raises(SystemExit) as exc:
            mod.main(["--help"])
        assert exc.value.code == 0
        assert "usage: python -m llava.eval." in capsys.readouterr().out


def test_mme_release_layout_and_missing_prompt(tmp_path):
    root = tmp_path / "MME_Benchmark_release_version"
    (root / "artwork" / "images").mkdir(parents=True)
    (root / "artwork" / "questions_answers_YN").mkdir()
    (root / "artwork" / "images" / "10002.jpg").write_bytes(b"")
    (root / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Is this artwork by Monet? Please answer yes or no.\tYes\n"
        "Is this artwork by Dali? Please answer yes or no.\tNo\n")
    (root / "count").mkdir()
    (root / "count" / "000001.png").write_bytes(b"")
    (root / "count" / "000001.txt").write_text("Are there two dogs? Please answer yes or no.\tNo\n"
                                               "Are there three dogs? Please answer yes or no.\tYes\n")
    qid_art, qid_cnt = "artwork/images/10002.jpg", "count/000001.png"
    q = write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": qid_art, "image": qid_art, "category": "artwork",
         "text": "Is this artwork by Monet? Please answer yes or no."},
        {"question_id": qid_art, "image": qid_art, "category": "artwork",
         "text": "Is this artwork by Dali? Please answer yes or no."},
        {"question_id": qid_cnt, "image": qid_cnt, "category": "count", "text": "Are there two dogs?"},
        {"question_id": qid_cnt, "image": qid_cnt, "category": "count", "text": "Are there three dogs?"},
    ])
    # no "prompt" in the answers: the n-th answer of an id takes the n-th question of that id
    r = write_jsonl(tmp_path / "a.jsonl", [
        {"question_id": qid_art, "text": "Yes"}, {"question_id": qid_art, "text": "No"},
        {"question_id": qid_cnt, "text": "No"}, {"question_id": qid_cnt, "text": "Maybe"},
    ])
    res = eval_mme.evaluate(str(root), r, q)
    assert res["per_task"]["artwork"]["score"] == pytest.approx(200.0)
    assert res["per_task"]["count"]["score"] == pytest.approx(50.0)  # acc 50, acc+ 0
    assert res["perception"] == pytest.approx(250.0)


def test_pope_positional_fallback(tmp_path):
    ann = tmp_path / "coco"
    write_jsonl(ann / "coco_pope_random.json", [
        {"question_id": 1, "image": "a.jpg", "text": "Is there a dog?", "label": "yes"},
        {"question_id": 2, "image": "a.jpg", "text": "Is there a cat?", "label": "no"},
    ])
    # question texts that do not match the label file: labels are taken by position in the category
    q = write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": 10, "image": "a.jpg", "text": "Dog present?", "category": "random"},
        {"question_id": 11, "image": "a.jpg", "text": "Cat present?", "category": "random"},
    ])
    r = write_jsonl(tmp_path / "r.jsonl", [{"question_id": 11, "text": "No"}, {"question_id": 10, "text": "Yes"}])
    res = eval_pope.evaluate(str(ann), q, r)
    assert res["per_category"]["random"]["accuracy"] == 1.0


def test_convert_mmbench_for_submission_cli(tmp_path, capsys):
    import pandas as pd

    tsv = _mmbench_tsv(tmp_path / "mmbench_dev_20230712.tsv")
    write_jsonl(tmp_path / "answers" / "run1.jsonl", [{"question_id": 0, "text": "B"}, {"question_id": 1, "text": "A"}])
    out = convert_mmbench_for_submission.main(["--annotation-file", tsv, "--result-dir", str(tmp_path / "answers"),
                                               "--upload-dir", str(tmp_path / "upload"), "--experiment", "run1"])
    assert last_line(capsys).startswith(f"wrote {out} (2 rows")
    sub = pd.read_excel(out, engine="openpyxl")
    assert len(sub) == 6 and sub.loc[sub["index"] == 0, "prediction"].item() == "B"
    assert sub["prediction"].isna().sum() == 4


def test_pope_error_entries_count_as_wrong(tmp_path, capsys):
    # Two "no" questions: one answered "No", one an error entry with empty text. An empty answer
    # would parse as "yes" (FP); as an error it must count as wrong whatever the label: here FP too,
    # and for a "yes" label an FN — check both.
    ann_dir = tmp_path / "coco"
    rows = [{"question_id": i + 1, "image": f"im{i}.jpg", "text": f"Is there a q{i}?", "label": lab}
            for i, lab in enumerate(["no", "no", "yes", "yes"])]
    write_jsonl(ann_dir / "coco_pope_random.json", rows)
    questions = [{"question_id": i + 1, "image": f"im{i}.jpg", "text": f"Is there a q{i}?", "category": "random"}
                 for i in range(4)]
    results = [{"question_id": 1, "text": "No."},
               {"question_id": 2, "text": "", "error": "image file not found: im1.jpg"},
               {"question_id": 3, "text": "Yes"},
               {"question_id": 4, "text": "", "error": "image file not found: im3.jpg"}]
    q = write_jsonl(tmp_path / "q.jsonl", questions)
    r = write_jsonl(tmp_path / "a.jsonl", results)
    out = eval_pope.main(["--annotation-dir", str(ann_dir), "--question-file", q, "--result-file", r])
    m = out["per_category"]["random"]
    assert (m["TP"], m["FP"], m["TN"], m["FN"]) == (1, 1, 1, 1)
    assert out["num_errors"] == 2
    assert "2 error entries counted as wrong answers" in capsys.readouterr().out
