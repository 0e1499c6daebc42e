"""POPE scorer: LLaVA's ``llava/eval/eval_pope.py`` per split, and the mean F1 (the paper's number).

Reads
  * ``--annotation-dir`` with ``coco_pope_<split>.json`` files (JSON lines, ``"label": "yes"|"no"``);
    every file there must be one (as the original asserts), and each names a split;
  * ``--question-file`` ``llava_pope_test.jsonl`` (``question_id, category``, the split);
  * ``--result-file`` answers jsonl (``question_id, text``).

As the original, per split: the answers of the split, in answer-file order, are paired **by
position** with the lines of its label file; an answer is "no" when its first sentence (the text
before the first ``.``), with commas removed and split on single spaces, has a piece equal to
``No``, ``not`` or ``no`` — case-sensitive, so ``NO``, ``Not`` or ``No;`` count as "yes" — and
"yes" otherwise (:func:`pope_yes_no`); a label is negative only if it is exactly ``no``. "yes" is
the positive class; precision, recall, F1, accuracy and yes-ratio are printed per split as the
original prints them. The headline is the mean of the splits' F1 (x100), the paper's POPE column.

Positional pairing is only right when the answers of a split come in question-file order, so
answers in another order are refused (``--lenient`` pairs each answer with the label at its
question's position instead). A split without a "yes" answer has no precision: the original fails
there, so it is refused too (``--lenient`` scores it 0). ``--lenient`` also parses answers
case-insensitively on word boundaries (:func:`pope_yes_no_lenient`).
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
    finish,
    load_jsonl,
    require_dir,
    run_cli,
)

SPLITS = ("adversarial", "random", "popular")
PREFIX, SUFFIX = "coco_pope_", ".json"
_WORD = re.compile(r"[a-z]+")


def pope_yes_no(text: str) -> str:
    """LLaVA's POPE rule (module doc): ``"no"`` or ``"yes"``."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_yes_no_lenient(text: str) -> str:
    """``"no"`` if the first sentence has the word no/not in any case, else ``"yes"`` (``--lenient``)."""
    words = set(_WORD.findall(str(text).split(".", 1)[0].lower()))
    return "no" if ("no" in words or "not" in words) else "yes"


def binary_metrics(preds: list[str], labels: list[str], *, lenient: bool = False) -> dict:
    """The original's counts and metrics ("yes" positive, a label is negative only if ``"no"``)."""
    pos = [p != "no" for p in preds]
    gold = [g != "no" for g in labels]
    tp = sum(p and g for p, g in zip(pos, gold))
    fp = sum(p and not g for p, g in zip(pos, gold))
    tn = sum(not p and not g for p, g in zip(pos, gold))
    fn = sum(not p and g for p, g in zip(pos, gold))
    if tp == 0 and not lenient:  # the original divides by TP+FP, TP+FN and precision+recall
        raise ZeroDivisionError("no answer is a true 'yes' (TP = 0): precision, recall or F1 is undefined")
    precision = float(tp) / float(tp + fp) if tp + fp else 0.0
    recall = float(tp) / float(tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"num_samples": len(preds), "TP": tp, "FP": fp, "TN": tn, "FN": fn,
            "accuracy": (tp + tn) / (tp + tn + fp + fn), "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": sum(pos) / len(pos)}


def _splits(annotation_dir: str) -> list[str]:
    require_dir(annotation_dir, "annotation directory")
    names = sorted(os.listdir(annotation_dir))
    bad = [n for n in names if not (n.startswith(PREFIX) and n.endswith(SUFFIX))]
    if bad:
        raise ScorerInputError(f"{annotation_dir}: {', '.join(bad)}: the annotation directory may hold only "
                               f"{PREFIX}<split>{SUFFIX} files (one per split), as the original requires")
    if not names:
        raise ScorerInputError(f"{annotation_dir}: no {PREFIX}<split>{SUFFIX} files")
    splits = [n[len(PREFIX):-len(SUFFIX)] for n in names]
    return sorted(splits, key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))


def evaluate(annotation_dir: str, question_file: str, result_file: str, *, allow_partial: bool = False,
             lenient: bool = False) -> dict:
    splits = _splits(annotation_dir)
    labels = {s: [str(r.get("label")) for r in load_jsonl(os.path.join(annotation_dir, f"{PREFIX}{s}{SUFFIX}"),
                                                           f"POPE label file of '{s}'")] for s in splits}
    position: dict[str, tuple[str, int]] = {}
    count = dict.fromkeys(splits, 0)
    for i, q in enumerate(load_jsonl(question_file, "question file"), start=1):
        if "question_id" not in q or "category" not in q:
            raise ScorerInputError(f"{question_file}: line {i} lacks 'question_id' or 'category'")
        if q["category"] in count:
            position[qid_key(q["question_id"])] = (q["category"], count[q["category"]])
            count[q["category"]] += 1
    for s in splits:
        if count[s] > len(labels[s]):
            raise ScorerInputError(f"split '{s}': {count[s]} questions in {question_file} but only {len(labels[s])} "
                                   f"labels in {PREFIX}{s}{SUFFIX}")

    usable, coverage = usable_answers(load_jsonl(result_file, "result file"), position,
                                      lambda r: qid_key(r.get("question_id")), source=result_file,
                                      allow_partial=allow_partial)
    answers: dict[str, list[tuple[int, str]]] = {s: [] for s in splits}  # split -> [(position, text)]
    for key, r in usable.items():
        split, pos = position[key]
        answers[split].append((pos, str(r.get("text", ""))))

    parse = pope_yes_no_lenient if lenient else pope_yes_no
    per_split = {}
    for s in splits:
        if not answers[s]:
            continue
        order = [pos for pos, _ in answers[s]]
        if not lenient and any(b <= a for a, b in zip(order, order[1:])):
            bad = next(i for i in range(1, len(order)) if order[i] <= order[i - 1])
            raise ScorerInputError(
                f"{result_file}: the answers of split '{s}' are not in question-file order (its answer #{bad + 1} "
                f"is for the split's question #{order[bad] + 1}); the original pairs answers with labels by "
                f"position, so it would score them against the wrong labels. --lenient pairs by question.")
        try:
            per_split[s] = binary_metrics([parse(t) for _, t in answers[s]], [labels[s][p] for p, _ in answers[s]],
                                          lenient=lenient)
        except ZeroDivisionError as exc:
            raise ScorerInputError(f"split '{s}': {exc} (the original tool fails here; --lenient scores it 0)") from None
    f1s = [m["f1"] for m in per_split.values()]
    return {"benchmark": "pope", "per_category": per_split, "f1_mean": 100.0 * sum(f1s) / len(f1s),
            "num_samples": sum(m["num_samples"] for m in per_split.values()), "coverage": coverage}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.eval_pope",
                                description="POPE F1 per split (LLaVA's eval_pope.py) and their mean.")
    p.add_argument("--annotation-dir", required=True, help="folder with coco_pope_{adversarial,random,popular}.json")
    p.add_argument("--question-file", required=True, help="llava_pope_test.jsonl")
    p.add_argument("--result-file", required=True, help="answers jsonl (question_id, text)")
    add_scorer_args(p, lenient="Pair answers with labels by question (any answer order), parse no/not in any "
                               "case, and score a split without 'yes' answers 0.")
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    res = evaluate(args.annotation_dir, args.question_file, args.result_file, allow_partial=args.allow_partial,
                   lenient=args.lenient)
    for split, m in res["per_category"].items():
        print(f"Category: {split}, # samples: {m['num_samples']}")
        print("TP\tFP\tTN\tFN\t")
        print(f"{m['TP']}\t{m['FP']}\t{m['TN']}\t{m['FN']}")
        print(f"Accuracy: {m['accuracy']}")
        print(f"Precision: {m['precision']}")
        print(f"Recall: {m['recall']}")
        print(f"F1 score: {m['f1']}")
        print(f"Yes ratio: {m['yes_ratio']}")
        print(", ".join(f"{m[k]:.3f}" for k in ("f1", "accuracy", "precision", "recall", "yes_ratio")))
        print("====================================")
    n = len(res["per_category"])
    details = {s: {k: m[k] for k in ("f1", "accuracy", "precision", "recall", "yes_ratio", "num_samples")}
               for s, m in res["per_category"].items()}
    finish(args, "pope", res["f1_mean"], f"POPE F1 (mean over {n} split{'s' if n != 1 else ''}): {res['f1_mean']:.2f}",
           coverage=res["coverage"], result_file=args.result_file, num_samples=res["num_samples"], details=details)
    return res


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
