"""ScienceQA scorer: LLaVA's ``llava/eval/eval_science_qa.py``; IMG-Accuracy is the paper's SQA column.

Reads ``--base-dir`` with ``problems.json`` (``{pid: {"choices", "answer": index, "image", ...}}``)
and ``pid_splits.json`` (``{"test": [pid, ...]}``), and ``--result-file`` (answers jsonl,
``question_id`` = problem id, ``prompt``, ``text``).

As the original, for every problem of ``--split``: the answer letter is the text itself if it is
one of ``--options`` (A-E), its first character if the text starts with ``"X. "``, or the letter
of the only match of ``The answer is ([A-Z]).`` (any character after the letter), else
``FAILED`` (:func:`sqa_letter`); it is right when its index among the problem's options equals
``answer``. A problem is in the IMG subset when its answer's ``prompt`` contains ``<image>`` (the
original driver writes ``<image>\\n`` before the question of an image problem); a problem without
an answer counts wrong and outside the IMG subset, as in the original (only with
``--allow-partial``: by default every problem needs an answer).

``--img-from-problems`` takes the IMG subset from ``problems.json`` (problems with an ``image``)
instead: for answer files whose prompts lack ``<image>`` (written before the drivers kept it).
``--lenient`` also reads ``(A)``, ``A)``, ``A:`` and ``answer is A`` forms.

Writes ``--output-file`` (``{"correct": [...], "incorrect": [...]}``) and ``--output-result``
(``{"acc", "correct", "count", "results", "outputs"}``) in the original's format; prints the
coverage counts, the original's summary line and, last, ``IMG-Accuracy: XX.XX%``.
"""

from __future__ import annotations

import argparse
import os
import re

from llava.eval.answer_coverage import usable_answers
from llava.eval.ids import qid_key
from llava.eval.scoring_utils import (
    ScorerInputError,
    add_scorer_args,
    dump_json,
    finish,
    load_json,
    load_jsonl,
    run_cli,
)

DEFAULT_OPTIONS = ["A", "B", "C", "D", "E"]
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")
_LEADING = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])(?:[.:)]|$))")
_ANSWER_IS_LOOSE = re.compile(r"answer\s+is\s*:?\s*\(?([A-Z])\b", re.I)


def sqa_letter(text: str, options: list[str]) -> str:
    """The original's letter parsing (module doc); ``"FAILED"`` when it finds none."""
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else "FAILED"


def sqa_letter_lenient(text: str, options: list[str]) -> str:
    """``--lenient``: the original's rule, then ``(A)``, ``A)``, ``A:``, ``A.`` and one distinct ``answer is A``."""
    letter = sqa_letter(text, options)
    if letter != "FAILED":
        return letter
    s = text.strip()
    if s in options:
        return s
    m = _LEADING.match(s)
    if m and (m.group(1) or m.group(2)) in options:
        return m.group(1) or m.group(2)
    found = {x for x in _ANSWER_IS_LOOSE.findall(s) if x.isupper()} & set(options)
    return found.pop() if len(found) == 1 else "FAILED"


def evaluate(base_dir: str, result_file: str, split: str = "test", options: list[str] | None = None, *,
             allow_partial: bool = False, lenient: bool = False, img_from_problems: bool = False) -> dict:
    options = options or DEFAULT_OPTIONS
    problems = load_json(os.path.join(base_dir, "problems.json"), "ScienceQA problems file")
    splits = load_json(os.path.join(base_dir, "pid_splits.json"), "ScienceQA split file")
    if split not in splits:
        raise ScorerInputError(f"split '{split}' not in pid_splits.json (has: {', '.join(sorted(splits))})")
    pids = [str(p) for p in splits[split]]
    missing = [p for p in pids if p not in problems]
    if missing:
        raise ScorerInputError(f"problem ids of split '{split}' missing from problems.json: {', '.join(missing[:5])}")

    preds, coverage = usable_answers(load_jsonl(result_file, "result file"), pids,
                                     lambda r: qid_key(r.get("question_id")), source=result_file,
                                     allow_partial=allow_partial)

    parse = sqa_letter_lenient if lenient else sqa_letter
    results: dict[str, list] = {"correct": [], "incorrect": []}
    pred_idx_by_pid, outputs, disagree = {}, {}, []
    for pid in pids:
        prob = problems[pid]
        pred = preds.get(pid, {"text": "FAILED", "prompt": "Unknown"})
        text, prompt = str(pred.get("text", "")), str(pred.get("prompt", ""))
        letter = parse(text, options)
        pred_idx = options.index(letter) if letter in options[:len(prob["choices"])] else -1
        has_image = bool(prob.get("image"))
        if pid in preds and ("<image>" in prompt) != has_image:
            disagree.append(pid)
        analysis = {"question_id": pid, "parsed_ans": letter, "ground_truth": options[prob["answer"]],
                    "question": prompt, "pred": text,
                    "is_multimodal": has_image if img_from_problems else "<image>" in prompt}
        pred_idx_by_pid[pid] = pred_idx
        outputs[pid] = text
        results["correct" if pred_idx == prob["answer"] else "incorrect"].append(analysis)
    correct, total = len(results["correct"]), len(pids)
    img_correct = sum(a["is_multimodal"] for a in results["correct"])
    img_total = img_correct + sum(a["is_multimodal"] for a in results["incorrect"])
    any_tag = any("<image>" in str(preds[p].get("prompt", "")) for p in preds)
    if disagree and (any_tag or not img_from_problems):
        rule = "problems.json (--img-from-problems)" if img_from_problems else "the prompts, as in the original"
        print(f"warning: {len(disagree)} answers' prompts disagree with problems.json about the image "
              f"(first: {', '.join(disagree[:5])}); the IMG subset follows {rule}")
    if img_total == 0:
        raise ScorerInputError(
            f"{result_file}: no answer's prompt contains <image>, so the IMG subset is empty (the original fails "
            f"here). Answer files written before the drivers kept <image> in the prompt can be scored with "
            f"--img-from-problems.")
    return {"benchmark": "sqa", "split": split, "total": total, "correct": correct,
            "accuracy": correct / total * 100, "img_total": img_total, "img_correct": img_correct,
            "img_accuracy": img_correct / img_total * 100, "failed": sum(
                a["parsed_ans"] == "FAILED" for part in results.values() for a in part),
            "results": results, "pred_idx": pred_idx_by_pid, "outputs": outputs, "coverage": coverage}


def _options(values: list[str]) -> list[str]:
    """``--options A B C`` or, as the original's ``type=list``, ``--options ABC``."""
    return list(values[0]) if len(values) == 1 and len(values[0]) > 1 else values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.eval_science_qa",
                                description="ScienceQA accuracy (LLaVA's eval_science_qa.py); IMG-Accuracy is SQA-IMG.")
    p.add_argument("--base-dir", required=True, help="folder with problems.json and pid_splits.json")
    p.add_argument("--result-file", required=True, help="answers jsonl (question_id = problem id, prompt, text)")
    p.add_argument("--output-file", required=True, help="per-problem analysis (json) to write")
    p.add_argument("--output-result", required=True, help="summary (json) to write")
    p.add_argument("--split", default="test")
    p.add_argument("--options", nargs="+", default=DEFAULT_OPTIONS)
    p.add_argument("--img-from-problems", action="store_true",
                   help="IMG subset = problems with an image in problems.json (for answers whose prompts lack <image>)")
    add_scorer_args(p, lenient="Also read (A), A), A: and 'answer is A' answers.")
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    res = evaluate(args.base_dir, args.result_file, args.split, _options(args.options),
                   allow_partial=args.allow_partial, lenient=args.lenient, img_from_problems=args.img_from_problems)
    dump_json(args.output_file, res["results"], indent=2)
    dump_json(args.output_result, {"acc": res["accuracy"], "correct": res["correct"], "count": res["total"],
                                   "results": res["pred_idx"], "outputs": res["outputs"]}, indent=2)
    print(f"Total: {res['total']}, Correct: {res['correct']}, Accuracy: {res['accuracy']:.2f}%, "
          f"IMG-Accuracy: {res['img_accuracy']:.2f}%")
    finish(args, "sqa", res["img_accuracy"], f"IMG-Accuracy: {res['img_accuracy']:.2f}%", coverage=res["coverage"],
           result_file=args.result_file, num_samples=res["img_total"],
           details={"accuracy": res["accuracy"], "total": res["total"], "failed": res["failed"],
                    "img_from_problems": args.img_from_problems})
    return res


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
