"""ScienceQA offline scorer: overall accuracy and IMG accuracy (SQA-IMG, the paper's metric).

Reads
  * ``--base-dir`` containing ``problems.json`` (``{pid: {"question", "choices": [...],
    "answer": int index, "image": str|null, "split", ...}}``) and ``pid_splits.json``
    (``{"test": [pid, ...], ...}``);
  * ``--result-file`` answers jsonl (``question_id`` = problem id, ``text``).

Every problem of ``--split`` is scored; a problem without an answer or whose answer letter can't
be parsed counts as wrong (``FAILED``).  ``--answered-only`` restricts scoring to problems that
have an answer (useful for partial runs).  Letter parsing accepts ``A``, ``A.``, ``A. text``,
``(A)``, ``A)``, ``A:`` and ``... the answer is A``; the letter must be one of the problem's
options.

Writes ``--output-file`` (jsonl, one record per problem: ``question_id, pred, pred_idx, answer,
correct, has_image, text``) and ``--output-result`` (json summary).  The last printed line is
``IMG-Accuracy: XX.XX%``.
"""

from __future__ import annotations

import argparse
import json
import os
import re

from llava.eval.scoring_utils import (
    ScorerInputError,
    add_score_args,
    load_json,
    load_jsonl,
    maybe_write_score,
    qid_key,
    run_cli,
)

DEFAULT_OPTIONS = ["A", "B", "C", "D", "E"]

_LEADING = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])(?:[.:)]|$))")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*\(?([A-Z])\b", re.I)


def parse_letter(text: str, options: list[str] | None = None) -> str:
    """Return the option letter in ``text`` or ``"FAILED"``.

    Accepts ``"A"``, ``"A."``, ``"A. text"``, ``"(A)"``, ``"A)"``, ``"A: text"`` and
    ``"The answer is A."`` (one distinct letter).  ``options`` limits the accepted letters.
    """
    opts = options or DEFAULT_OPTIONS
    s = str(text).strip()
    if s in opts:
        return s
    m = _LEADING.match(s)
    if m:
        letter = m.group(1) or m.group(2)
        if letter in opts:
            return letter
    # the letter itself must be upper-case ("the answer is a cat" is not option A)
    found = {x for x in _ANSWER_IS.findall(s) if x.isupper()} & set(opts)
    if len(found) == 1:
        return found.pop()
    return "FAILED"


def evaluate(base_dir: str, result_file: str, split: str = "test", options: list[str] | None = None,
             answered_only: bool = False) -> dict:
    options = options or DEFAULT_OPTIONS
    problems = load_json(os.path.join(base_dir, "problems.json"), "ScienceQA problems file")
    splits = load_json(os.path.join(base_dir, "pid_splits.json"), "ScienceQA split file")
    if split not in splits:
        raise ScorerInputError(f"split '{split}' not in pid_splits.json (has: {', '.join(sorted(splits))})")
    pids = [str(p) for p in splits[split]]
    preds = {}
    for r in load_jsonl(result_file, "result file"):
        preds[qid_key(r.get("question_id"))] = r
    if answered_only:
        pids = [p for p in pids if p in preds]

    records = []
    correct = total = img_correct = img_total = failed = missing = 0
    for pid in pids:
        if pid not in problems:
            raise ScorerInputError(f"problem id {pid} from pid_splits.json is not in problems.json")
        prob = problems[pid]
        n_choices = len(prob.get("choices", []))
        valid = options[:n_choices]
        pred = preds.get(pid)
        if pred is None:
            missing += 1
            text, letter = "", "FAILED"
        else:
            text = str(pred.get("text", ""))
            letter = parse_letter(text, options)
        pred_idx = valid.index(letter) if letter in valid else -1
        if letter == "FAILED":
            failed += 1
        ok = pred_idx == prob["answer"]
        has_image = bool(prob.get("image"))
        total += 1
        correct += ok
        if has_image:
            img_total += 1
            img_correct += ok
        records.append({"question_id": pid, "pred": letter, "pred_idx": pred_idx, "answer": prob["answer"],
                        "correct": bool(ok), "has_image": has_image, "text": text})
    return {
        "benchmark": "sqa",
        "split": split,
        "total": total,
        "correct": correct,
        "accuracy": 100.0 * correct / total if total else 0.0,
        "img_total": img_total,
        "img_correct": img_correct,
        "img_accuracy": 100.0 * img_correct / img_total if img_total else 0.0,
        "failed": failed,
        "missing": missing,
        "records": records,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.eval_science_qa",
                                description="ScienceQA accuracy; IMG-Accuracy (problems with an image) is SQA-IMG.")
    p.add_argument("--base-dir", required=True, help="folder with problems.json and pid_splits.json")
    p.add_argument("--result-file", required=True, help="answers jsonl (question_id = problem id, text)")
    p.add_argument("--output-file", required=True, help="per-question results (jsonl) to write")
    p.add_argument("--output-result", required=True, help="summary (json) to write")
    p.add_argument("--split", default="test")
    p.add_argument("--options", nargs="+", default=DEFAULT_OPTIONS)
    p.add_argument("--answered-only", action="store_true",
                   help="score only problems that have an answer (default: missing answers count as wrong)")
    add_score_args(p)
    return p


def _write(path: str, write_fn) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        write_fn(fh)


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    res = evaluate(args.base_dir, args.result_file, args.split, args.options, args.answered_only)
    _write(args.output_file,
           lambda fh: [fh.write(json.dumps(r, ensure_ascii=False) + "\n") for r in res["records"]])
    summary = {k: v for k, v in res.items() if k != "records"}
    _write(args.output_result, lambda fh: json.dump(summary, fh, indent=2))
    maybe_write_score(args, "sqa", res["img_accuracy"], result_file=args.result_file,
                      num_samples=res["img_total"],
                      details={"accuracy": res["accuracy"], "total": res["total"], "failed": res["failed"]})
    if res["missing"]:
        print(f"note: {res['missing']} problem(s) of split '{args.split}' have no answer (counted wrong)")
    print(f"Total: {res['total']}, Correct: {res['correct']}, Accuracy: {res['accuracy']:.2f}%, "
          f"Failed to parse: {res['failed']}")
    print(f"IMG total: {res['img_total']}, IMG correct: {res['img_correct']}")
    print(f"IMG-Accuracy: {res['img_accuracy']:.2f}%")
    return res


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
