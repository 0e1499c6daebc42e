"""TextVQA (val, v0.5.1) offline scorer: VQA soft accuracy.

Reads
  * ``--annotation-file`` ``TextVQA_0.5.1_val.json``: ``{"data": [{"question_id": int,
    "image_id": str, "question": str, "answers": [10 str], ...}, ...]}``
  * ``--result-file`` answers jsonl: one ``{"question_id", "prompt", "text", ...}`` per line.

Results are matched to annotations by ``question_id``; a result whose id is unknown falls back
to ``(image id, question)`` (image id from the result's ``image`` / ``metadata.image`` field,
question parsed from the first question line of ``prompt``), then to the question text alone
when it is unique.  Accuracy is averaged over the matched results.

Usage::

    python -m llava.eval.eval_textvqa --annotation-file playground/data/eval/textvqa/TextVQA_0.5.1_val.json \\
        --result-file playground/data/eval/textvqa/answers/llava-v1.6-vicuna-7b.jsonl

The last printed line is ``Accuracy: XX.XX%``.
"""

from __future__ import annotations

import argparse
import os
import re

from llava.eval.m4c_evaluator import TextVQAAccuracyEvaluator
from llava.eval.scoring_utils import (
    ScorerInputError,
    add_score_args,
    load_json,
    load_jsonl,
    maybe_write_score,
    qid_key,
    run_cli,
)

_OCR_PROMPT = re.compile(r"Question:\s*(.*?)\s*Short answer:", re.S)


def question_from_prompt(prompt: str) -> str:
    """Extract the question (lower-cased) from a TextVQA prompt.

    Handles ``"<question>\\nReference OCR token: ...\\nAnswer the question ..."``, the OCR line
    first, ``"OCR tokens: ... Question: <q> Short answer:"`` and a leading ``<image>`` line.
    """
    text = prompt.replace("<image>", "").strip()
    if text.startswith("OCR tokens:"):
        m = _OCR_PROMPT.search(text)
        if m:
            return m.group(1).strip().lower()
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    for ln in lines:
        low = ln.lower()
        if low.startswith("reference ocr token") or low.startswith("answer the question"):
            continue
        return low
    return lines[0].lower() if lines else ""


def _image_stem(value) -> str | None:
    if not value:
        return None
    return os.path.splitext(os.path.basename(str(value)))[0]


def evaluate(annotation_file: str, result_file: str) -> dict:
    """Score ``result_file`` against ``annotation_file``; returns a dict (accuracy in percent)."""
    ann = load_json(annotation_file, "annotation file")
    data = ann.get("data") if isinstance(ann, dict) else ann
    if not isinstance(data, list):
        raise ScorerInputError(f"{annotation_file}: expected a JSON object with a 'data' list")
    by_qid: dict[str, dict] = {}
    by_img_q: dict[tuple[str, str], dict] = {}
    by_q: dict[str, list[dict]] = {}
    for i, a in enumerate(data):
        if "answers" not in a or "question" not in a:
            raise ScorerInputError(f"{annotation_file}: data[{i}] lacks 'answers' or 'question'")
        if "question_id" in a:
            by_qid[qid_key(a["question_id"])] = a
        q = str(a["question"]).strip().lower()
        if a.get("image_id") is not None:
            by_img_q[(str(a["image_id"]), q)] = a
        by_q.setdefault(q, []).append(a)

    results = load_jsonl(result_file, "result file")
    evaluator = TextVQAAccuracyEvaluator()
    pred_list = []
    unmatched = []
    seen = set()
    for res in results:
        ann_entry = by_qid.get(qid_key(res.get("question_id")))
        if ann_entry is None:
            q = question_from_prompt(str(res.get("prompt", "")))
            meta = res.get("metadata") if isinstance(res.get("metadata"), dict) else {}
            img = _image_stem(res.get("image") or meta.get("image") or meta.get("image_id"))
            if img is not None:
                ann_entry = by_img_q.get((img, q))
            if ann_entry is None and len(by_q.get(q, [])) == 1:
                ann_entry = by_q[q][0]
        if ann_entry is None:
            unmatched.append(res.get("question_id"))
            continue
        seen.add(id(ann_entry))
        pred_list.append({"pred_answer": str(res.get("text", "")), "gt_answers": ann_entry["answers"]})

    acc = 100.0 * evaluator.eval_pred_list(pred_list) if pred_list else 0.0
    return {
        "benchmark": "textvqa",
        "accuracy": acc,
        "num_samples": len(pred_list),
        "num_results": len(results),
        "num_unmatched": len(unmatched),
        "unmatched_question_ids": unmatched[:20],
        "num_annotations": len(data),
        "num_annotations_without_result": len(data) - len(seen),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llava.eval.eval_textvqa",
        description="TextVQA val soft accuracy (standard VQA answer normalisation).",
    )
    p.add_argument("--annotation-file", required=True, help="TextVQA_0.5.1_val.json")
    p.add_argument("--result-file", required=True, help="answers jsonl (question_id, prompt, text)")
    add_score_args(p)
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    res = evaluate(args.annotation_file, args.result_file)
    if res["num_unmatched"]:
        print(f"warning: {res['num_unmatched']} result(s) matched no annotation, e.g. "
              f"{res['unmatched_question_ids'][:5]}")
    if res["num_annotations_without_result"]:
        print(f"note: {res['num_annotations_without_result']} of {res['num_annotations']} annotations have no result")
    maybe_write_score(args, "textvqa", res["accuracy"], result_file=args.result_file,
                      num_samples=res["num_samples"])
    print(f"Samples: {res['num_samples']}")
    print(f"Accuracy: {res['accuracy']:.2f}%")
    return res


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
