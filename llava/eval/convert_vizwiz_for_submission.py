"""Convert VizWiz-VQA answers to the EvalAI submission format.

Reads ``--annotation-file`` (``llava_test.jsonl``: ``question_id, image, text``) and
``--result-file`` (answers jsonl: ``question_id, text``); writes ``--result-upload-file``:
``[{"image": "VizWiz_test_00000000.jpg", "answer": str}, ...]`` with one entry per test question
(``""`` when unanswered).  Answers are normalised with the standard VQA processor; answers that
say the question cannot be answered ("Unanswerable", "unanswerable.", "cannot be answered",
"not answerable", ...) become the VizWiz label ``unanswerable``.
"""

from __future__ import annotations

import argparse
import json
import os
import re

from llava.eval.m4c_evaluator import EvalAIAnswerProcessor
from llava.eval.scoring_utils import ScorerInputError, iter_jsonl, qid_key, require_file, run_cli

_UNANSWERABLE = re.compile(
    r"^(?:unanswerable|not answerable|cannot answer|can't answer|cannot be answered|can't be answered|"
    r"it is unanswerable|question is unanswerable|this question is unanswerable)\b")


def normalize_vizwiz_answer(text: str, processor=None) -> str:
    proc = processor or EvalAIAnswerProcessor()
    ans = proc(text)
    if _UNANSWERABLE.match(ans):
        return "unanswerable"
    return ans


def convert(annotation_file: str, result_file: str) -> tuple[list[dict], int]:
    require_file(annotation_file, "VizWiz question file")
    answers = {qid_key(r.get("question_id")): str(r.get("text", ""))
               for r in iter_jsonl(result_file, "result file")}
    proc = EvalAIAnswerProcessor()
    out = []
    missing = 0
    for q in iter_jsonl(annotation_file, "VizWiz question file"):
        if "image" not in q or "question_id" not in q:
            raise ScorerInputError(f"{annotation_file}: a line lacks 'question_id' or 'image'")
        key = qid_key(q["question_id"])
        if key in answers:
            ans = normalize_vizwiz_answer(answers[key], proc)
        else:
            ans = ""
            missing += 1
        out.append({"image": os.path.basename(str(q["image"])), "answer": ans})
    return out, missing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.convert_vizwiz_for_submission",
                                description="VizWiz answers jsonl -> EvalAI submission json.")
    p.add_argument("--annotation-file", required=True, help="llava_test.jsonl (question_id, image, text)")
    p.add_argument("--result-file", required=True, help="answers jsonl (question_id, text)")
    p.add_argument("--result-upload-file", required=True, help="submission json to write")
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    entries, missing = convert(args.annotation_file, args.result_file)
    parent = os.path.dirname(args.result_upload_file)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(args.result_upload_file, "w", encoding="utf-8") as fh:
        json.dump(entries, fh)
    print(f"total questions: {len(entries)}, missing (empty answer): {missing}")
    print(f"wrote {args.result_upload_file}")
    return {"total": len(entries), "missing": missing}


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
