"""GQA, POPE, ScienceQA and MME scorers on small hand-worked files in the benchmarks' real formats:
each default reproduces the original tool (quirks included), each flag does what it says."""

from __future__ import annotations

import json

import pytest
from scorer_files import coverage_line, output_lines, refused, write_json, write_jsonl

from llava.eval import convert_gqa_for_eval, eval_gqa, eval_mme, eval_pope, eval_science_qa
from llava.eval.eval_mme import mme_yes_no
from llava.eval.eval_pope import pope_yes_no

# --------------------------------------------------------------------------- GQA

GQA_QUESTIONS = {
    "201": {"answer": "yes", "isBalanced": True, "types": {"structural": "verify"}},
    "202": {"answer": "left", "isBalanced": True, "types": {"structural": "query"}},
    "203": {"answer": "sofa", "isBalanced": True, "types": {"structural": "query"}},
    "204": {"answer": "red", "isBalanced": False, "types": {"structural": "query"}},
    "205": {"answer": "table", "isBalanced": True, "types": {"structural": "choose"}},
}
GQA_ANSWERS = [
    {"question_id": "201", "text": "Yes."},     # yes: right
    {"question_id": "202", "text": " Left."},   # " left": rstrip('.').lower() only, no strip -> wrong
    {"question_id": "203", "text": "Sofa..."},  # sofa: right
    {"question_id": "204", "text": "blue"},     # unbalanced: written, not scored
    {"question_id": "205", "text": "table"},    # right
]


def _gqa(tmp_path, answers=GQA_ANSWERS):
    qs = write_json(tmp_path / "data" / "testdev_balanced_questions.json", GQA_QUESTIONS)
    return qs, write_jsonl(tmp_path / "merge.jsonl", answers)


def test_gqa_as_converter_plus_eval_py(tmp_path, capsys):
    qs, preds = _gqa(tmp_path)
    conv = tmp_path / "data" / "testdev_balanced_predictions.json"
    out = eval_gqa.main(["--questions", qs, "--predictions", preds, "--convert", str(conv)])
    lines = output_lines(capsys)
    # 3 of the 4 balanced questions; binary (verify, choose) 2/2; open (query) 1/2
    assert lines[0] == coverage_line(4, 4)
    assert lines[1:4] == ["Binary: 100.00%", "Open: 50.00%", "Accuracy: 75.00%"]
    assert lines[-1] == "GQA accuracy: 75.00%"
    assert out["num_samples"] == 4
    # the converter's file: every answer (the unbalanced one too), ids as given, json.dump formatting
    assert conv.read_text() == json.dumps([
        {"questionId": "201", "prediction": "yes"}, {"questionId": "202", "prediction": " left"},
        {"questionId": "203", "prediction": "sofa"}, {"questionId": "204", "prediction": "blue"},
        {"questionId": "205", "prediction": "table"}])
    # ... which eval.py's command line (--tier, run in the data folder) scores the same
    assert eval_gqa.main(["--questions", qs, "--predictions", str(conv)])["accuracy"] == 75.0


def test_gqa_eval_py_command_line(tmp_path, capsys, monkeypatch):
    qs, preds = _gqa(tmp_path)
    convert_gqa_for_eval.main(["--src", preds, "--dst", str(tmp_path / "data" / "testdev_balanced_predictions.json")])
    assert coverage_line(4, 4) in output_lines(capsys)  # questions found next to --dst
    monkeypatch.chdir(tmp_path / "data")
    assert eval_gqa.main(["--tier", "testdev_balanced"])["accuracy"] == 75.0


def test_gqa_refusals(tmp_path, capsys):
    qs, preds = _gqa(tmp_path, [a for a in GQA_ANSWERS if a["question_id"] != "205"])
    assert "1 of 4 questions have no answer (first: 205)" in refused(
        eval_gqa.main, ["--questions", qs, "--predictions", preds], capsys)
    # the unbalanced question needs no answer
    qs, preds = _gqa(tmp_path, [a for a in GQA_ANSWERS if a["question_id"] != "204"])
    assert eval_gqa.main(["--questions", qs, "--predictions", preds])["accuracy"] == 75.0
    # ids written as numbers: eval.py looks the string ids up and would not find them
    numeric = [{**a, "question_id": int(a["question_id"])} for a in GQA_ANSWERS]
    qs, preds = _gqa(tmp_path, numeric)
    assert "question id 201 is a JSON int" in refused(eval_gqa.main, ["--questions", qs, "--predictions", preds], capsys)
    conv = tmp_path / "p.json"
    eval_gqa.main(["--questions", qs, "--predictions", preds, "--lenient", "--convert", str(conv)])
    assert output_lines(capsys)[-1] == "GQA accuracy: 75.00% (lenient)"
    assert json.loads(conv.read_text())[0] == {"questionId": "201", "prediction": "yes"}


# --------------------------------------------------------------------------- POPE

POPE = {  # split -> (labels, answers)
    "adversarial": (["yes", "yes", "yes", "no", "no", "no"],
                    ["Yes.", "NO", "No, there is not.", "Not at all", "no", "No; sorry"]),
    "random": (["yes", "no"], ["Yes", "no"]),
    "popular": (["yes", "No"], ["yes", "No."]),  # a label "No" is not "no": positive
}


def _pope(tmp_path, answers_by_split=None, order=("popular", "random", "adversarial")):
    ann = tmp_path / "coco"
    questions, answers, qid = [], {}, 0
    for split, (labels, texts) in POPE.items():
        rows = []
        texts = (answers_by_split or {}).get(split, texts)
        for i, (label, text) in enumerate(zip(labels, texts)):
            qid += 1
            image = f"COCO_val2014_{qid:012d}.jpg"
            rows.append({"question_id": i + 1, "image": image, "text": f"Is there a thing {i}?", "label": label})
            questions.append({"question_id": qid, "image": image, "text": f"Is there a thing {i}?", "category": split})
            answers.setdefault(split, []).append({"question_id": qid, "prompt": f"Is there a thing {i}?", "text": text})
        write_jsonl(ann / f"coco_pope_{split}.json", rows)
    q = write_jsonl(tmp_path / "llava_pope_test.jsonl", questions)
    r = write_jsonl(tmp_path / "answers.jsonl", [a for split in order for a in answers[split]])
    return ["--annotation-dir", str(ann), "--question-file", q, "--result-file", r]


def test_pope_yes_no_rule():
    # first sentence, commas dropped, split on single spaces, No/not/no case-sensitive
    assert [pope_yes_no(t) for t in ("Yes.", "No, there is not.", "no", "not sure")] == ["yes", "no", "no", "no"]
    assert [pope_yes_no(t) for t in ("NO", "Not at all", "No;", "No.", "no\nthere")] == ["yes", "yes", "yes", "no", "yes"]
    assert pope_yes_no("Yes. There is no cat.") == "yes"
    # MME reads the same answers differently: a distinct rule under a distinct name
    assert [mme_yes_no(t) for t in ("NO", "Not at all", "No;")] == ["no", "no", "no"]


def test_pope_per_split_f1_and_mean(tmp_path, capsys):
    out = eval_pope.main(_pope(tmp_path))
    lines = output_lines(capsys)
    # adversarial: preds yes yes no yes no yes vs labels yes yes yes no no no -> TP 2 FP 2 TN 1 FN 1
    # P = 1/2, R = 2/3, F1 = 4/7; random F1 = 1; popular: labels both positive, P = 1, R = 1/2, F1 = 2/3
    adv = out["per_category"]["adversarial"]
    assert (adv["TP"], adv["FP"], adv["TN"], adv["FN"]) == (2, 2, 1, 1)
    assert adv["f1"] == pytest.approx(4 / 7) and adv["yes_ratio"] == pytest.approx(4 / 6)
    assert out["per_category"]["popular"]["f1"] == pytest.approx(2 / 3)
    assert lines[0] == coverage_line(10, 10)
    assert lines[1:5] == ["Category: adversarial, # samples: 6", "TP\tFP\tTN\tFN\t", "2\t2\t1\t1", "Accuracy: 0.5"]
    assert "0.571, 0.500, 0.500, 0.667, 0.667" in lines
    assert lines[-1] == f"POPE F1 (mean over 3 splits): {100 * (4 / 7 + 1 + 2 / 3) / 3:.2f}" == \
        "POPE F1 (mean over 3 splits): 74.60"


def test_pope_pairs_by_position(tmp_path, capsys):
    argv = _pope(tmp_path)
    answers = [json.loads(x) for x in open(argv[-1])]
    swapped = answers[:2][::-1] + answers[2:]  # popular's two answers swapped
    write_jsonl(tmp_path / "answers.jsonl", swapped)
    err = refused(eval_pope.main, argv, capsys)
    assert "split 'popular' are not in question-file order" in err and "--lenient" in err
    out = eval_pope.main(argv + ["--lenient"])  # paired by question: the same numbers as in order
    assert out["per_category"]["popular"]["f1"] == pytest.approx(2 / 3)
    assert output_lines(capsys)[-1].endswith("(lenient)")


def test_pope_undefined_f1_and_bad_annotation_dir(tmp_path, capsys):
    argv = _pope(tmp_path, {"random": ["No", "no"]})  # no "yes" in random: TP = 0, precision undefined
    assert "split 'random': no answer is a true 'yes'" in refused(eval_pope.main, argv, capsys)
    assert eval_pope.main(argv + ["--lenient"])["per_category"]["random"]["f1"] == 0.0
    (tmp_path / "coco" / "README.txt").write_text("x")
    assert "README.txt" in refused(eval_pope.main, argv, capsys)


# --------------------------------------------------------------------------- ScienceQA

SQA_PROBLEMS = {  # pid: (number of choices, answer index, has image)
    "1": (2, 0, True), "2": (2, 1, True), "3": (3, 2, False), "4": (2, 0, True), "6": (2, 1, False),
    "7": (3, 0, True), "8": (2, 0, True), "9": (2, 1, False),
}
SQA_ANSWERS = {
    "1": "A",                  # right
    "2": "B. y",               # right ("X. ...")
    "3": "The answer is C.",   # right
    "4": "A.",                 # FAILED: not a letter, not "X. " (the original needs the space)
    "6": "C",                  # a letter, but problem 6 has two options: wrong
    "7": "The answer is A",    # FAILED: the pattern needs a character after the letter
    "8": "The answer is AB",   # A: that character may be anything
    "9": "(B)",                # FAILED
}


def _sqa(tmp_path, answers=SQA_ANSWERS, image_tag=True):
    base = tmp_path / "scienceqa"
    problems = {pid: {"question": f"q{pid}", "choices": ["x", "y", "z"][:n], "answer": a,
                      "image": "image.png" if img else None, "split": "test"} for pid, (n, a, img) in SQA_PROBLEMS.items()}
    problems["5"] = {"question": "q5", "choices": ["x", "y"], "answer": 0, "image": None, "split": "train"}
    write_json(base / "problems.json", problems)
    write_json(base / "pid_splits.json", {"test": list(SQA_PROBLEMS), "train": ["5"]})
    rows = [{"question_id": pid, "prompt": ("<image>\n" if SQA_PROBLEMS[pid][2] and image_tag else "")
             + f"Context: N/A\nq{pid}\nAnswer with the option's letter from the given choices directly.", "text": text}
            for pid, text in answers.items()]
    res = write_jsonl(tmp_path / "answers.jsonl", rows)
    return ["--base-dir", str(base), "--result-file", res, "--output-file", str(tmp_path / "out" / "o.jsonl"),
            "--output-result", str(tmp_path / "out" / "r.json")]


def test_sqa_letters_and_img_subset(tmp_path, capsys):
    argv = _sqa(tmp_path)
    out = eval_science_qa.main(argv)
    lines = output_lines(capsys)
    # right: 1, 2, 3, 8 -> 4/8; IMG (1, 2, 4, 7, 8): 1, 2, 8 -> 3/5
    assert lines[-3:] == [coverage_line(8, 8), "Total: 8, Correct: 4, Accuracy: 50.00%, IMG-Accuracy: 60.00%",
                          "IMG-Accuracy: 60.00%"]
    assert out["img_total"] == 5
    analysis = json.loads(open(argv[5]).read())  # the original's output-file format
    failed4 = next(a for a in analysis["incorrect"] if a["question_id"] == "4")
    assert failed4 == {"question_id": "4", "parsed_ans": "FAILED", "ground_truth": "A", "question":
                       "<image>\nContext: N/A\nq4\nAnswer with the option's letter from the given choices directly.",
                       "pred": "A.", "is_multimodal": True}
    summary = json.loads(open(argv[7]).read())
    assert list(summary) == ["acc", "correct", "count", "results", "outputs"]
    assert (summary["acc"], summary["correct"], summary["count"]) == (50.0, 4, 8)
    assert summary["results"]["6"] == -1 and summary["results"]["8"] == 0 and summary["outputs"]["9"] == "(B)"


def test_sqa_flags(tmp_path, capsys):
    # --lenient reads "A.", "The answer is A" and "(B)" too: 7/8 right, IMG 5/5
    out = eval_science_qa.main(_sqa(tmp_path) + ["--lenient"])
    assert (out["correct"], out["img_accuracy"]) == (7, 100.0)
    # answers written without <image> in the prompt: the IMG subset is empty, as the original would fail
    argv = _sqa(tmp_path, image_tag=False)
    assert "--img-from-problems" in refused(eval_science_qa.main, argv, capsys)
    assert eval_science_qa.main(argv + ["--img-from-problems"])["img_accuracy"] == 60.0
    # a missing answer: refused; with --allow-partial it counts wrong and outside IMG, as the original
    argv = _sqa(tmp_path, {k: v for k, v in SQA_ANSWERS.items() if k != "8"})
    assert "1 of 8 questions have no answer (first: 8)" in refused(eval_science_qa.main, argv, capsys)
    out = eval_science_qa.main(argv + ["--allow-partial"])
    assert (out["correct"], out["total"], out["img_correct"], out["img_total"]) == (3, 8, 2, 4)


# --------------------------------------------------------------------------- MME


def _mme_release(root):
    """MME_Benchmark_release_version: per-image txt files (next to the images, or in questions_answers_YN)."""
    files = {
        ("existence", "img1"): [("Is there a dog in this image? Please answer yes or no.", "Yes"),
                                ("Is there a cat in this image? Please answer yes or no.", "No")],
        ("existence", "img2"): [("Is there a car in this image?  Please answer yes or no.", "Yes"),  # two spaces
                                ("Is there a bus in this image? Please answer yes or no.", "No")],
        ("artwork", "10002"): [("Is this artwork created by Monet? Please answer yes or no.", "Yes"),
                               ("Is this artwork created by Dali? Please answer yes or no.", "No")],
        ("code_reasoning", "0001"): [("Is the output 3? Please answer yes or no.", "Yes"),
                                     ("Is the output 4? Please answer yes or no.", "No")],
    }
    for (sub, stem), qa in files.items():
        d = root / sub / "questions_answers_YN" if sub == "artwork" else root / sub
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{stem}.txt").write_text("".join(f"{q}\t{a}\n" for q, a in qa))
    (root / "artwork" / "images").mkdir()
    return files


SHORT = "\nAnswer the question using a single word or phrase."
MME_ANSWERS = [  # (question_id, prompt, answer): LLaVA's answers, two per image, in question order
    ("existence/img1.jpg", "Is there a dog in this image? Please answer yes or no." + SHORT, "Yes"),
    ("existence/img1.jpg", "Is there a cat in this image?" + SHORT, "No, there is no cat."),
    ("existence/img2.jpg", "Is there a car in this image?" + SHORT, "   Yes"),  # raw first 4 chars: "   y" -> other
    ("existence/img2.jpg", "Is there a bus in this image?" + SHORT, "None"),  # "none" holds "no"
    ("artwork/10002.jpg", "Is this artwork created by Monet?" + SHORT, "Yes, it is."),
    ("artwork/10002.jpg", "Is this artwork created by Dali?" + SHORT, "Not really"),
    ("code_reasoning/0001.png", "Is the output 3?" + SHORT, "yes"),
    ("code_reasoning/0001.png", "Is the output 4?" + SHORT, "unknown"),  # "unkn": other
]


def _mme(tmp_path, answers=MME_ANSWERS):
    root = tmp_path / "MME_Benchmark_release_version"
    if not root.exists():
        _mme_release(root)
    res = write_jsonl(tmp_path / "answers" / "llava-v1.5-13b.jsonl",
                      [{"question_id": q, "prompt": p, "text": t} for q, p, t in answers])
    return ["--gt-dir", str(root), "--result-file", res]


def calculation_py(results_dir, tasks) -> dict[str, float]:
    """MME's calculation.py re-derived: consecutive lines in pairs, 4 tab fields, raw 4-char prefix."""
    scores = {}
    for task in tasks:
        lines = open(results_dir / f"{task}.txt").readlines()
        right = plus = 0
        for pair in (lines[i:i + 2] for i in range(0, len(lines), 2)):
            ok = 0
            for line in pair:
                _, _, gt, pred = line.split("\t")
                pred = pred.lower()
                label = pred if pred in ("yes", "no") else "yes" if "yes" in pred[:4] else "no" if "no" in pred[:4] \
                    else "other"
                ok += label == gt.lower()
            right += ok
            plus += ok == 2
        scores[task] = right / len(lines) * 100 + plus / (len(lines) // 2) * 100
    return scores


def test_mme_converter_and_calculation(tmp_path, capsys):
    out_dir = tmp_path / "eval_tool" / "answers" / "llava-v1.5-13b"
    out = eval_mme.main(_mme(tmp_path) + ["--write-results-dir", str(out_dir)])
    # existence: acc 3/4, acc+ 1/2 -> 125; artwork 200; perception 325; code_reasoning acc 1/2, acc+ 0 -> 50
    assert out["per_task"]["existence"]["score"] == 125.0 and out["perception"] == 325.0 and out["cognition"] == 50.0
    lines = output_lines(capsys)
    assert lines[0] == coverage_line(8, 8) and lines[-1] == "MME perception: 325.00"
    # the converter's format: <stem>.txt, question as in the ground truth, answer, raw prediction
    assert (out_dir / "existence.txt").read_text().splitlines()[2:] == [
        "img2.txt\tIs there a car in this image?  Please answer yes or no.\tYes\t   Yes",
        "img2.txt\tIs there a bus in this image? Please answer yes or no.\tNo\tNone"]
    assert calculation_py(out_dir, ["existence", "artwork", "code_reasoning"]) == {
        t: out["per_task"][t]["score"] for t in ("existence", "artwork", "code_reasoning")}


def test_mme_your_results_layout(tmp_path):
    files = _mme_release(tmp_path / "MME_Benchmark_release_version")
    gt = tmp_path / "eval_tool" / "Your_Results"
    gt.mkdir(parents=True)
    for sub in ("existence", "artwork", "code_reasoning"):
        ext = ".png" if sub == "code_reasoning" else ".jpg"
        (gt / f"{sub}.txt").write_text("".join(f"{stem}{ext}\t{q}\t{a}\t\n" for (s, stem), qa in files.items()
                                               if s == sub for q, a in qa))
    argv = _mme(tmp_path)
    argv[1] = str(tmp_path / "eval_tool")
    assert eval_mme.main(argv)["perception"] == 325.0


def test_mme_refusals_and_lenient(tmp_path, capsys):
    # consecutive answers of two images: calculation.py would pair the wrong questions
    mixed = [MME_ANSWERS[i] for i in (0, 2, 1, 3)] + MME_ANSWERS[4:]
    argv = _mme(tmp_path, mixed)
    assert "consecutive answers 'existence/img1.jpg' and 'existence/img2.jpg' are of two images" in refused(
        eval_mme.main, argv, capsys)
    assert eval_mme.main(argv + ["--lenient"])["perception"] == 325.0
    # a line break in an answer would break the converter's line format
    broken = MME_ANSWERS[:4] + [(MME_ANSWERS[4][0], MME_ANSWERS[4][1], "Yes\nIt is by Monet.")] + MME_ANSWERS[5:]
    argv = _mme(tmp_path, broken)
    assert "1 answers hold a tab or line break (first: artwork/10002.jpg)" in refused(eval_mme.main, argv, capsys)
    assert eval_mme.main(argv + ["--lenient"])["perception"] == 325.0
    # an unanswered question, an answer to a question MME does not have
    argv = _mme(tmp_path, MME_ANSWERS[:-1] + [("code_reasoning/0001.png", "Is the output 5?" + SHORT, "no")])
    err = refused(eval_mme.main, argv, capsys)
    assert "1 of 8 questions have no answer (first: code_reasoning/0001: 'Is the output 4? Please answer yes or no.')" \
        in err and "1 answer with ids unknown to the benchmark" in err


def test_mme_yes_no_rule():
    assert [mme_yes_no(t) for t in ("Yes", "yes, there is", "No", "no.", "None", "Not sure")] == \
        ["yes", "yes", "no", "no", "no", "no"]
    assert [mme_yes_no(t) for t in ("   yes", "There is a dog", "unknown", "I think yes")] == ["other"] * 4
