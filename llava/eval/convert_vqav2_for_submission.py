"""Convert VQAv2 answers to the EvalAI submission format.

Reads ``--src`` (answers jsonl: ``question_id, text``) and ``--test-split``
(``llava_vqav2_mscoco_test2015.jsonl``: every test question, ``question_id`` first); writes
``--dst``: ``[{"question_id": int, "answer": str}, ...]`` with one entry per test question,
answers normalised with the standard VQA processor (:mod:`llava.eval.m4c_evaluator`) and ``""``
for questions without an answer.  Upload the result to the VQAv2 challenge (test-dev phase).
"""

from __future__ import annotations

import argparse
import json
import os

from llava.eval.m4c_evaluator import EvalAIAnswerProcessor
from llava.eval.scoring_utils import ScorerInputError, iter_jsonl, qid_key, require_file, run_cli


def convert(src: str, test_split: str) -> tuple[list[dict], int, int]:
    """Returns (submission entries, #answered, #missing)."""
    require_file(test_split, "VQAv2 test split file")
    answers = {qid_key(r.get("question_id")): str(r.get("text", "")) for r in iter_jsonl(src, "answers file")}
    proc = EvalAIAnswerProcessor()
    out = []
    missing = 0
    for q in iter_jsonl(test_split, "VQAv2 test split file"):
        if "question_id" not in q:
            raise ScorerInputError(f"{test_split}: a line lacks 'question_id'")
        key = qid_key(q["question_id"])
        if key in answers:
            ans = proc(answers[key])
        else:
            ans = ""
            missing += 1
        out.append({"question_id": int(q["question_id"]), "answer": ans})
    return out, len(out) - missing, missing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.convert_vqav2_for_submission",
                                description="VQAv2 answers jsonl -> EvalAI submission json.")
    p.add_argument("--src", required=True, help="answers jsonl (question_id, text), e.g. merge.jsonl")
    p.add_argument("--test-split", required=True, help="llava_vqav2_mscoco_test2015.jsonl")
    p.add_argument("--dst", required=True, help="submission json to write")
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    entries, answered, missing = convert(args.src, args.test_split)
    parent = os.path.dirname(args.dst)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(args.dst, "w", encoding="utf-8") as fh:
        json.dump(entries, fh)
    print(f"total questions: {len(entries)}, answered: {answered}, missing (empty answer): {missing}")
    print(f"wrote {args.dst}")
    return {"total": len(entries), "answered": answered, "missing": missing}


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
