"""MMBench: VLMEvalKit's rule-based matching and CircularEval, and LLaVA's submission xlsx, on a
small TSV in the release's format; expected numbers by hand."""

from __future__ import annotations

import json

import pytest
from scorer_files import coverage_line, output_lines, refused, write_jsonl

from llava.eval import convert_mmbench_for_submission, eval_mmbench
from llava.eval.mmbench_matching import can_infer, parse_choice_lenient

ANIMALS = {"A": "cat", "B": "dog", "C": "fish", "D": "bird"}


@pytest.mark.parametrize(
    "text, expected",
    [("B", "B"), ("B.", "B"), ("(C)", "C"), ("The answer is B.", "B"), ("I think B", "B"), ("B, the dog", "B"),
     ("Option C", "C"),
     ("dog", "B"), ("The dog.", "B"),  # the option's text inside the answer
     ("A dog", "A"),  # the article is a piece "A"
     ("A or B", False), ("cat and dog", False), ("答案：B", False), ("Ｂ", False), ("E", False),
     ("Z", "Z"), ("Sorry, I can't help with images of people yet.", "Z")],
)
def test_vlmevalkit_matching(text, expected):
    assert can_infer(text, dict(ANIMALS)) == expected


def test_lenient_matching():
    assert parse_choice_lenient("答案：B", dict(ANIMALS)) == "B"
    assert parse_choice_lenient("Ｃ", dict(ANIMALS)) == "C"
    assert parse_choice_lenient("A dog", dict(ANIMALS)) == "A"  # VLMEvalKit's reading comes first


COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source", "l2-category",
           "comment", "split"]


def _tsv(path):
    rows = []
    base = ["cat", "dog", "fish", "bird"]
    for k in range(4):  # question 0 and its circular copies (index + k * 1e6, options rotated)
        opts = base[k:] + base[:k]
        rows.append([k * 1_000_000, "Which animal barks?", "nan", *opts, "ABCD"[opts.index("dog")], "animals"])
    for k, opts in enumerate((["yes", "no"], ["no", "yes"])):
        rows.append([1 + k * 1_000_000, "Is it day?", "It is noon.", *opts, "", "", "AB"[opts.index("yes")], "time"])
    # option D is the text "None": a missing value for pandas, so no option D and an empty cell
    rows.append([2, "Which colour is the sky?", "", "red", "green", "blue", "None", "C", "colours"])
    lines = ["\t".join(COLUMNS)]
    for r in rows:
        index, question, hint, a, b, c, d, answer, category = r
        lines.append("\t".join(map(str, [index, question, hint, a, b, c, d, answer, category, "aW1n", "src",
                                         "perception", "", "dev"])))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


ANSWERS = {0: "B", 1_000_000: "The dog", 2_000_000: "(D) dog",
           3_000_000: "答案：C",  # read as nothing: question 0 is wrong
           1: "A", 1_000_001: "B",  # question 1 right
           2: "A red one? No, blue."}  # read as A: question 2 wrong


def _run(tmp_path, answers=ANSWERS, name="mmbench_dev_20230712.tsv"):
    tsv = _tsv(tmp_path / name)
    res = write_jsonl(tmp_path / "answers" / "run1.jsonl", [{"question_id": i, "text": t} for i, t in answers.items()])
    return tsv, res


def test_circular_eval(tmp_path, capsys):
    tsv, res = _run(tmp_path)
    out = eval_mmbench.main(["--annotation-file", tsv, "--result-file", res, "--score-file", str(tmp_path / "s.json")])
    lines = output_lines(capsys)
    assert lines[0] == coverage_line(7, 7)
    assert lines[-1] == "MMBench CircularEval accuracy: 33.33%"
    assert out["num_questions"] == 3 and out["per_category"] == {"animals": 0.0, "colours": 0.0, "time": 100.0}
    assert json.loads((tmp_path / "s.json").read_text())["benchmark"] == "mmbench"
    # --lenient reads 答案：C: question 0 right too
    assert eval_mmbench.main(["--annotation-file", tsv, "--result-file", res, "--lenient"])["circular_accuracy"] == \
        pytest.approx(200 / 3)


def test_unanswered_row_counts_wrong(tmp_path, capsys):
    answers = {k: v for k, v in ANSWERS.items() if k != 1_000_001}
    tsv, res = _run(tmp_path, answers, name="mmbench_dev_cn_20231003.tsv")
    argv = ["--annotation-file", tsv, "--result-file", res]
    assert "1 of 7 questions have no answer (first: 1000001)" in refused(eval_mmbench.main, argv, capsys)
    out = eval_mmbench.main(argv + ["--allow-partial", "--score-file", str(tmp_path / "s.json")])
    # question 1 lost a rotation: wrong, and still in the denominator
    assert (out["circular_accuracy"], out["num_questions"], out["benchmark"]) == (0.0, 3, "mmbench_cn")
    rec = json.loads((tmp_path / "s.json").read_text())
    assert rec["partial"] is True and rec["benchmark"] == "mmbench_cn"


def test_in_process_rounds(tmp_path):
    tsv = _tsv(tmp_path / "mmbench_dev_20230712.tsv")
    # question 1 and its copy each asked twice with the options rotated in-process (round_id)
    rows = [{"question_id": i, "round_id": k, "text": t} for i, (t0, t1) in
            {1: ("A", "B"), 1_000_001: ("B", "A")}.items() for k, t in enumerate((t0, t1))]
    rows += [{"question_id": i, "round_id": k, "text": "x"} for i in (0, 1_000_000, 2_000_000, 3_000_000)
             for k in range(4)] + [{"question_id": 2, "round_id": k, "text": "x"} for k in range(3)]
    res = write_jsonl(tmp_path / "rounds.jsonl", rows)
    usable, cov = eval_mmbench.read_answers(eval_mmbench.load_tsv(tsv), res, allow_partial=False)
    assert cov.num_questions == 4 * 4 + 2 * 2 + 3
    assert eval_mmbench.evaluate(eval_mmbench.load_tsv(tsv), usable)["per_category"]["time"] == 100.0


def _xlsx_rows(path):
    import openpyxl

    sheet = openpyxl.load_workbook(path).active
    return [[c.value for c in row] for row in sheet.iter_rows()]


def test_submission_xlsx(tmp_path, capsys):
    answers = {k: v for k, v in ANSWERS.items() if k != 2}
    tsv, res = _run(tmp_path, answers)
    xlsx = tmp_path / "upload" / "run1.xlsx"
    eval_mmbench.main(["--annotation-file", tsv, "--result-file", res, "--upload-xlsx", str(xlsx), "--allow-partial"])
    rows = _xlsx_rows(xlsx)
    assert rows[0] == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert rows[1] == [0, "Which animal barks?", "cat", "dog", "fish", "bird", "B", "B", "dev"]
    assert rows[5] == [1, "Is it day?", "yes", "no", None, None, "A", "A", "dev"]
    assert rows[7] == [2, "Which colour is the sky?", "red", "green", "blue", None, None, "C", "dev"]  # "None" -> empty
    # the original command line writes the same spreadsheet
    convert_mmbench_for_submission.main(["--annotation-file", tsv, "--result-dir", str(tmp_path / "answers"),
                                         "--upload-dir", str(tmp_path / "up2"), "--experiment", "run1",
                                         "--allow-partial"])
    assert _xlsx_rows(tmp_path / "up2" / "run1.xlsx") == rows
    assert "refusing to convert" in refused(convert_mmbench_for_submission.main, [
        "--annotation-file", tsv, "--result-dir", str(tmp_path / "answers"), "--upload-dir", str(tmp_path / "up3"),
        "--experiment", "run1"], capsys)
