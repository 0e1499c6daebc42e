"""LLaVA's ``scripts/convert_vqav2_for_submission.py``: VQAv2 answers -> EvalAI submission file.

Two command lines:

* the original: ``--split SPLIT --ckpt CKPT [--dir ./playground/data/eval/vqav2]`` reads
  ``DIR/answers/SPLIT/CKPT/merge.jsonl`` and ``DIR/llava_vqav2_mscoco_test2015.jsonl``, writes
  ``DIR/answers_upload/SPLIT/CKPT.json``; the questions asked are ``DIR/SPLIT.jsonl``;
* ``--src ANSWERS --test-split llava_vqav2_mscoco_test2015.jsonl --dst OUT
  [--question-file llava_vqav2_mscoco_test-dev2015.jsonl]``.

Writes ``[{"question_id": <as in the test2015 file>, "answer": normalised answer}, ...]`` for
every test2015 question (``""`` for those not asked: test-dev is a subset of test), answers
through the VQA normaliser (:class:`llava.eval.m4c_evaluator.EvalAIAnswerProcessor`). Every
question of the split file must be answered (coverage rules: :mod:`llava.eval.answer_coverage`);
without a split file only ids unknown to test2015, error entries, duplicates and emptiness can be
checked.
"""

from __future__ import annotations

import argparse
import os

from llava.eval.answer_coverage import is_error_entry, usable_answers
from llava.eval.ids import qid_key
from llava.eval.m4c_evaluator import normalize_answer
from llava.eval.scoring_utils import ScorerInputError, add_coverage_args, dump_json, load_jsonl, run_cli

TEST_SPLIT = "llava_vqav2_mscoco_test2015.jsonl"


def convert(src: str, test_split: str, question_file: str | None = None, *,
            allow_partial: bool = False) -> list[dict]:
    test = load_jsonl(test_split, "VQAv2 test split file")
    for i, q in enumerate(test, start=1):
        if "question_id" not in q:
            raise ScorerInputError(f"{test_split}: line {i} lacks 'question_id'")
    known = {qid_key(q["question_id"]) for q in test}
    records = load_jsonl(src, "answers file")
    if question_file:
        expected = [qid_key(q.get("question_id")) for q in load_jsonl(question_file, "VQAv2 question file")]
        strangers = [k for k in expected if k not in known]
        if strangers:
            raise ScorerInputError(f"{question_file}: {len(strangers)} questions are not in {test_split} "
                                   f"(first: {', '.join(strangers[:5])})")
    else:
        expected = list(dict.fromkeys(k for r in records if (k := qid_key(r.get("question_id"))) in known
                                      and not is_error_entry(r)))
    usable, _ = usable_answers(records, expected, lambda r: qid_key(r.get("question_id")), source=src,
                               allow_partial=allow_partial, verb="convert")
    return [{"question_id": q["question_id"],
             "answer": normalize_answer(str(usable[k].get("text", ""))) if (k := qid_key(q["question_id"])) in usable else ""}
            for q in test]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.convert_vqav2_for_submission",
                                description="VQAv2 answers jsonl -> EvalAI submission json.")
    orig = p.add_argument_group("the original command line")
    orig.add_argument("--split", default=None, help="e.g. llava_vqav2_mscoco_test-dev2015")
    orig.add_argument("--ckpt", default=None, help="answers folder name under DIR/answers/SPLIT/")
    orig.add_argument("--dir", default="./playground/data/eval/vqav2", help="the VQAv2 folder (default: %(default)s)")
    files = p.add_argument_group("explicit files")
    files.add_argument("--src", default=None, help="answers jsonl (question_id, text), e.g. merge.jsonl")
    files.add_argument("--test-split", default=None, help=TEST_SPLIT)
    files.add_argument("--dst", default=None, help="submission json to write")
    files.add_argument("--question-file", default=None, help="the questions asked (e.g. the test-dev jsonl)")
    add_coverage_args(p)
    return p


def _main(argv=None) -> list[dict]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.ckpt or args.split:
        if not (args.ckpt and args.split):
            parser.error("the original command line needs both --split and --ckpt")
        src = os.path.join(args.dir, "answers", args.split, args.ckpt, "merge.jsonl")
        test_split = os.path.join(args.dir, TEST_SPLIT)
        dst = os.path.join(args.dir, "answers_upload", args.split, f"{args.ckpt}.json")
        qfile = os.path.join(args.dir, f"{args.split}.jsonl")
        question_file = args.question_file or (qfile if os.path.isfile(qfile) else None)
    elif args.src and args.test_split and args.dst:
        src, test_split, dst, question_file = args.src, args.test_split, args.dst, args.question_file
    else:
        parser.error("give --split and --ckpt [--dir], or --src, --test-split and --dst")
    if question_file is None:
        print("note: no question file (pass --question-file): completeness not checked")
    entries = convert(src, test_split, question_file, allow_partial=args.allow_partial)
    dump_json(dst, entries)
    print(f"wrote {len(entries)} answers to {dst}")
    return entries


def main(argv=None) -> list[dict]:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
