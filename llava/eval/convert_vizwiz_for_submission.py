"""LLaVA's ``scripts/convert_vizwiz_for_submission.py``: VizWiz answers -> EvalAI submission file.

Reads ``--annotation-file`` (``llava_test.jsonl``: ``question_id, image, ...``) and
``--result-file`` (answers jsonl); writes ``--result-upload-file``: ``[{"image": <as in the
annotation file>, "answer": normalised answer}, ...]`` in annotation order. The answers go
through the VQA normaliser (:class:`llava.eval.m4c_evaluator.EvalAIAnswerProcessor`) and nothing
else. As the original, every question needs an answer (with ``--allow-partial`` an unanswered
one is written as ``""``).
"""

from __future__ import annotations

import argparse

from llava.eval.answer_coverage import usable_answers
from llava.eval.ids import qid_key
from llava.eval.m4c_evaluator import normalize_answer
from llava.eval.scoring_utils import ScorerInputError, add_coverage_args, dump_json, load_jsonl, run_cli


def convert(annotation_file: str, result_file: str, *, allow_partial: bool = False) -> list[dict]:
    questions = load_jsonl(annotation_file, "VizWiz question file")
    for i, q in enumerate(questions, start=1):
        if "image" not in q or "question_id" not in q:
            raise ScorerInputError(f"{annotation_file}: line {i} lacks 'question_id' or 'image'")
    usable, _ = usable_answers(load_jsonl(result_file, "result file"), [qid_key(q["question_id"]) for q in questions],
                               lambda r: qid_key(r.get("question_id")), source=result_file,
                               allow_partial=allow_partial, verb="convert")
    return [{"image": q["image"],
             "answer": normalize_answer(str(usable[k].get("text", ""))) if (k := qid_key(q["question_id"])) in usable else ""}
            for q in questions]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.convert_vizwiz_for_submission",
                                description="VizWiz answers jsonl -> EvalAI submission json.")
    p.add_argument("--annotation-file", required=True, help="llava_test.jsonl (question_id, image, text)")
    p.add_argument("--result-file", required=True, help="answers jsonl (question_id, text)")
    p.add_argument("--result-upload-file", required=True, help="submission json to write")
    add_coverage_args(p)
    return p


def _main(argv=None) -> list[dict]:
    args = build_parser().parse_args(argv)
    entries = convert(args.annotation_file, args.result_file, allow_partial=args.allow_partial)
    dump_json(args.result_upload_file, entries)
    print(f"wrote {len(entries)} answers to {args.result_upload_file}")
    return entries


def main(argv=None) -> list[dict]:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
