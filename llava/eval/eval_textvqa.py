"""TextVQA (val, v0.5.1) scorer: VQA soft accuracy, as LLaVA's ``llava/eval/eval_textvqa.py``.

Reads
  * ``--annotation-file`` ``TextVQA_0.5.1_val.json``: ``{"data": [{"image_id": str,
    "question": str, "answers": [10 str], ...}, ...]}``;
  * ``--result-file`` answers jsonl (``question_id, prompt, text``), or every ``*.jsonl`` of
    ``--result-dir`` (scored one by one, in name order).

Matching, as the original: an answer's key is ``(question_id, question)`` where ``question_id`` is
the **image id** (that is what LLaVA's ``llava_textvqa_val_v051_ocr.jsonl`` puts there) and
``question`` is read from the answer's ``prompt`` and lower-cased: the text between ``Question:``
and ``Short answer:`` for an ``OCR tokens: ...`` prompt; the first line of a three-line prompt
with a ``Reference OCR token:`` line (the second line when the prompt starts with it); the first
line of a two-line prompt. An annotation's key is ``(image_id, question.lower())``; when two
annotations share a key the later one holds the answers of both, as in the original.

Every annotation must have an answer (coverage rules: :mod:`llava.eval.answer_coverage`).
``--lenient`` also matches an answer whose ``question_id`` is TextVQA's own question id, reads
prompts of any shape (the first line that is not the OCR line or the instruction) and falls back
to (image file, question).

Prints the coverage counts, ``Samples: N`` and, last, ``Accuracy: XX.XX%``.
"""

from __future__ import annotations

import argparse
import os
import re

from llava.eval.answer_coverage import Tally, check_coverage, is_error_entry
from llava.eval.ids import qid_key
from llava.eval.m4c_evaluator import TextVQAAccuracyEvaluator
from llava.eval.scoring_utils import (
    ScorerInputError,
    add_scorer_args,
    finish,
    headline_marks,
    load_json,
    load_jsonl,
    run_cli,
)

_OCR_QUESTION = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)


def question_from_prompt(prompt: str) -> str:
    """The question of a TextVQA prompt, lower-cased, by the original scorer's rules (module doc)."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        m = _OCR_QUESTION.search(prompt)
        if m is None:
            raise ValueError("an 'OCR tokens:' prompt without 'Question: ... Short answer:'")
        question = m.group(1)
    elif "Reference OCR token: " in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith("Reference OCR token:") else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"a prompt of {len(lines)} lines (the original reads 2, or 3 with a Reference OCR token line)")
    return question.lower()


def question_from_prompt_lenient(prompt: str) -> str:
    """Any prompt shape: ``<image>`` dropped, the first line that is not the OCR line or the instruction."""
    text = prompt.replace("<image>", "").strip()
    if text.startswith("OCR tokens:"):
        m = _OCR_QUESTION.search(text)
        if m:
            return m.group(1).strip().lower()
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    for ln in lines:
        low = ln.lower()
        if not (low.startswith("reference ocr token") or low.startswith("answer the question")):
            return low
    return lines[0].lower() if lines else ""


def _annotations(annotation_file: str) -> list[dict]:
    ann = load_json(annotation_file, "annotation file")
    data = ann.get("data") if isinstance(ann, dict) else None
    if not isinstance(data, list):
        raise ScorerInputError(f"{annotation_file}: expected a JSON object with a 'data' list")
    for i, a in enumerate(data):
        if not isinstance(a, dict) or not {"image_id", "question", "answers"} <= set(a):
            raise ScorerInputError(f"{annotation_file}: data[{i}] lacks 'image_id', 'question' or 'answers'")
        if len(a["answers"]) != 10:
            raise ScorerInputError(f"{annotation_file}: data[{i}] has {len(a['answers'])} answers, expected 10")
    return data


def _lenient_key(res: dict, by_qid: dict, keys: set) -> tuple[str, str]:
    question = question_from_prompt_lenient(str(res.get("prompt", "")))
    key = (qid_key(res.get("question_id")), question)
    if key in keys:
        return key
    ann = by_qid.get(qid_key(res.get("question_id")))
    if ann is not None:
        return qid_key(ann["image_id"]), str(ann["question"]).lower()
    meta = res.get("metadata") if isinstance(res.get("metadata"), dict) else {}
    image = res.get("image") or meta.get("image")
    if image:
        return os.path.splitext(os.path.basename(str(image)))[0], question
    return key


def evaluate(annotation_file: str, result_file: str, *, allow_partial: bool = False, lenient: bool = False) -> dict:
    """Score one answers file; returns ``accuracy`` (percent), ``num_samples`` and ``coverage``."""
    data = _annotations(annotation_file)
    keys = [(qid_key(a["image_id"]), str(a["question"]).lower()) for a in data]
    by_key = dict(zip(keys, data))  # later annotations win, as in the original's dict
    by_qid = {qid_key(a["question_id"]): a for a in data if "question_id" in a} if lenient else {}
    tally = Tally(keys, show=lambda k: f"{k[0]}: {k[1]!r}")

    pred_list = []
    for res in load_jsonl(result_file, "result file"):
        if is_error_entry(res):
            tally.add(None, error=True, shown=qid_key(res.get("question_id")))
            continue
        if lenient:
            key = _lenient_key(res, by_qid, by_key.keys())
        else:
            try:
                key = (qid_key(res.get("question_id")), question_from_prompt(str(res.get("prompt", ""))))
            except ValueError as exc:
                raise ScorerInputError(f"{result_file}: answer {res.get('question_id')!r}: {exc}; "
                                       f"--lenient reads other prompt shapes") from None
        if tally.add(key):
            pred_list.append({"pred_answer": str(res.get("text", "")), "gt_answers": by_key[key]["answers"]})
    coverage = tally.finish()
    check_coverage(coverage, result_file, allow_partial)
    return {"benchmark": "textvqa", "accuracy": 100.0 * TextVQAAccuracyEvaluator().eval_pred_list(pred_list),
            "num_samples": len(pred_list), "coverage": coverage}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.eval_textvqa",
                                description="TextVQA val soft accuracy (LLaVA's eval_textvqa.py).")
    p.add_argument("--annotation-file", required=True, help="TextVQA_0.5.1_val.json")
    p.add_argument("--result-file", default=None, help="answers jsonl (question_id = image id, prompt, text)")
    p.add_argument("--result-dir", default=None, help="score every *.jsonl in this folder")
    add_scorer_args(p, lenient="Match by TextVQA question id or image file too and read prompts of any shape.")
    return p


def _score(args, result_file: str) -> dict:
    print(os.path.splitext(os.path.basename(result_file))[0])
    res = evaluate(args.annotation_file, result_file, allow_partial=args.allow_partial, lenient=args.lenient)
    print(f"Samples: {res['num_samples']}")
    return res


def _main(argv=None) -> dict | list[dict]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.result_file is None and args.result_dir is None:
        parser.error("give --result-file or --result-dir")
    if args.score_file and args.result_file is None:
        parser.error("--score-file needs --result-file (one record per answers file)")
    out = []
    if args.result_file is not None:
        res = _score(args, args.result_file)
        finish(args, "textvqa", res["accuracy"], f"Accuracy: {res['accuracy']:.2f}%", coverage=res["coverage"],
               result_file=args.result_file, num_samples=res["num_samples"])
        out.append(res)
    if args.result_dir is not None:
        failed = []
        for name in sorted(os.listdir(args.result_dir)):
            if not name.endswith(".jsonl"):
                print(f"Skipping {name}")
                continue
            try:
                res = _score(args, os.path.join(args.result_dir, name))
            except ScorerInputError as exc:
                print(f"error: {exc}")
                failed.append(name)
                continue
            print(f"Accuracy: {res['accuracy']:.2f}%" + headline_marks(args, res["coverage"]))
            out.append(res)
        if failed:
            raise ScorerInputError(f"{len(failed)} answers file(s) in {args.result_dir} not scored: {', '.join(failed)}")
    return out[0] if len(out) == 1 else out


def main(argv=None) -> dict | list[dict]:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
