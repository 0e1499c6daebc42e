"""POPE offline scorer: per-split precision/recall/F1 and the mean F1 (the paper's number).

Reads
  * ``--annotation-dir`` holding ``coco_pope_adversarial.json``, ``coco_pope_random.json``,
    ``coco_pope_popular.json`` (JSON lines ``{"question_id", "image", "text", "label": "yes"|"no"}``);
  * ``--question-file`` ``llava_pope_test.jsonl`` (``question_id, image, text, category`` with
    category in adversarial/random/popular);
  * ``--result-file`` answers jsonl (``question_id, text, ...``).

Each answer's question is looked up by ``question_id`` in the question file, which gives its
category; its label is found in that category's annotation file by (image, question text) and,
failing that, by position (the n-th question of a category in the question file <-> the n-th
line of its annotation file, which is how the two files are aligned).

Answer parsing: keep the text before the first ``.``, lower-case it; if it contains the word
``no`` or ``not`` the answer is "no", otherwise "yes".  "yes" is the positive class.

The last printed line is ``POPE F1 (mean over 3 splits): XX.XX``.
"""

from __future__ import annotations

import argparse
import os
import re

from llava.eval.scoring_utils import (
    ScorerInputError,
    add_score_args,
    load_jsonl,
    maybe_write_score,
    qid_key,
    require_dir,
    run_cli,
)

CATEGORIES = ("adversarial", "random", "popular")
_WORD = re.compile(r"[a-z]+")


def parse_yes_no(text: str) -> str:
    """``"no"`` if the first sentence contains the word no/not, else ``"yes"``."""
    first = str(text).split(".", 1)[0].lower()
    words = set(_WORD.findall(first))
    return "no" if ("no" in words or "not" in words) else "yes"


def _norm_question(text: str) -> str:
    line = str(text).replace("<image>", "").strip().split("\n", 1)[0]
    return " ".join(line.lower().split())


def binary_metrics(preds: list[str], labels: list[str]) -> dict:
    """Confusion counts and metrics with "yes" as the positive class (fractions, not percent)."""
    tp = sum(p == "yes" and g == "yes" for p, g in zip(preds, labels))
    fp = sum(p == "yes" and g == "no" for p, g in zip(preds, labels))
    tn = sum(p == "no" and g == "no" for p, g in zip(preds, labels))
    fn = sum(p == "no" and g == "yes" for p, g in zip(preds, labels))
    n = len(preds)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "num_samples": n, "TP": tp, "FP": fp, "TN": tn, "FN": fn,
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision, "recall": recall, "f1": f1,
        "yes_ratio": sum(p == "yes" for p in preds) / n if n else 0.0,
    }


def evaluate(annotation_dir: str, question_file: str, result_file: str) -> dict:
    require_dir(annotation_dir, "annotation directory")
    questions = load_jsonl(question_file, "question file")
    q_by_id: dict[str, dict] = {}
    position: dict[str, int] = {}
    per_cat_count: dict[str, int] = {}
    for i, q in enumerate(questions):
        if "question_id" not in q or "category" not in q:
            raise ScorerInputError(f"{question_file}: line {i + 1} lacks 'question_id' or 'category'")
        key = qid_key(q["question_id"])
        q_by_id[key] = q
        cat = q["category"]
        position[key] = per_cat_count.get(cat, 0)
        per_cat_count[cat] = position[key] + 1

    results = load_jsonl(result_file, "result file")
    cats_needed = []
    for r in results:
        q = q_by_id.get(qid_key(r.get("question_id")))
        if q is not None and q["category"] not in cats_needed:
            cats_needed.append(q["category"])

    labels_by_key: dict[str, dict[tuple[str, str], list[str]]] = {}
    labels_by_pos: dict[str, list[str]] = {}
    for cat in cats_needed:
        path = os.path.join(annotation_dir, f"coco_pope_{cat}.json")
        rows = load_jsonl(path, f"POPE annotation file for '{cat}'")
        keyed: dict[tuple[str, str], list[str]] = {}
        for row in rows:
            keyed.setdefault((os.path.basename(str(row.get("image", ""))), _norm_question(row.get("text", ""))),
                             []).append(str(row["label"]).strip().lower())
        labels_by_key[cat] = keyed
        labels_by_pos[cat] = [str(row["label"]).strip().lower() for row in rows]

    preds: dict[str, list[str]] = {c: [] for c in cats_needed}
    labels: dict[str, list[str]] = {c: [] for c in cats_needed}
    unmatched = errors = 0
    for r in results:
        key = qid_key(r.get("question_id"))
        q = q_by_id.get(key)
        if q is None:
            unmatched += 1
            continue
        cat = q["category"]
        cand = labels_by_key[cat].get((os.path.basename(str(q.get("image", ""))), _norm_question(q.get("text", ""))))
        if cand:
            label = cand[0] if len(cand) == 1 or len(set(cand)) == 1 else cand.pop(0)
        elif position[key] < len(labels_by_pos[cat]):
            label = labels_by_pos[cat][position[key]]
        else:
            raise ScorerInputError(f"no label for question_id {q['question_id']} in coco_pope_{cat}.json")
        if r.get("error"):  # a failed generation (error entry) counts as a wrong answer
            errors += 1
            preds[cat].append("no" if label == "yes" else "yes")
        else:
            preds[cat].append(parse_yes_no(r.get("text", "")))
        labels[cat].append(label)

    per_category = {}
    for cat in sorted(cats_needed, key=lambda c: CATEGORIES.index(c) if c in CATEGORIES else len(CATEGORIES)):
        per_category[cat] = binary_metrics(preds[cat], labels[cat])
    f1s = [m["f1"] for m in per_category.values()]
    mean_f1 = 100.0 * sum(f1s) / len(f1s) if f1s else 0.0
    return {
        "benchmark": "pope",
        "per_category": per_category,
        "f1_mean": mean_f1,
        "num_samples": sum(m["num_samples"] for m in per_category.values()),
        "num_unmatched": unmatched,
        "num_errors": errors,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.eval_pope",
                                description="POPE F1 per split (adversarial/random/popular) and their mean.")
    p.add_argument("--annotation-dir", required=True, help="folder with coco_pope_{adversarial,random,popular}.json")
    p.add_argument("--question-file", required=True, help="llava_pope_test.jsonl")
    p.add_argument("--result-file", required=True, help="answers jsonl (question_id, text)")
    add_score_args(p)
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    res = evaluate(args.annotation_dir, args.question_file, args.result_file)
    if res["num_unmatched"]:
        print(f"warning: {res['num_unmatched']} answer(s) have a question_id not in the question file")
    if res["num_errors"]:
        print(f"note: {res['num_errors']} error entr{'y' if res['num_errors'] == 1 else 'ies'} counted as wrong answers")
    for cat, m in res["per_category"].items():
        print(f"Category: {cat}, # samples: {m['num_samples']}")
        print("TP\tFP\tTN\tFN\t")
        print(f"{m['TP']}\t{m['FP']}\t{m['TN']}\t{m['FN']}")
        print(f"Accuracy: {m['accuracy']:.3f}")
        print(f"Precision: {m['precision']:.3f}")
        print(f"Recall: {m['recall']:.3f}")
        print(f"F1 score: {m['f1']:.3f}")
        print(f"Yes ratio: {m['yes_ratio']:.3f}")
        print(f"{m['f1']:.3f}, {m['accuracy']:.3f}, {m['precision']:.3f}, {m['recall']:.3f}, {m['yes_ratio']:.3f}")
        print("====================================")
    details = {cat: {k: m[k] for k in ("f1", "accuracy", "precision", "recall", "yes_ratio", "num_samples")}
               for cat, m in res["per_category"].items()}
    maybe_write_score(args, "pope", res["f1_mean"], result_file=args.result_file,
                      num_samples=res["num_samples"], details=details)
    n = len(res["per_category"])
    print(f"POPE F1 (mean over {n} split{'s' if n != 1 else ''}): {res['f1_mean']:.2f}")
    return res


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
