"""GQA (testdev-balanced) offline scorer: exact-match accuracy.

Reads
  * ``--questions`` ``testdev_balanced_questions.json``: ``{question_id: {"answer": str,
    "types": {"structural": ..., ...}, ...}, ...}``;
  * ``--predictions`` answers jsonl (``question_id, text``).

A prediction is normalised with ``text.strip().rstrip('.').lower()`` (LLaVA's conversion) and
compared with the question's ``answer`` (stripped, lower-cased).  Accuracy is over the questions
that have a prediction; a breakdown by ``types.structural`` is printed when available.
``--convert-only OUT`` instead writes the official GQA predictions file
(``[{"questionId": str, "prediction": str}, ...]``, e.g. ``testdev_balanced_predictions.json``)
for the official ``eval.py`` and stops; ``--convert OUT`` writes it and scores as well.

The last printed line is ``GQA accuracy: XX.XX%``.
"""

from __future__ import annotations

import argparse
import json
import os

from llava.eval.scoring_utils import (
    ScorerInputError,
    add_score_args,
    load_json,
    load_jsonl,
    maybe_write_score,
    qid_key,
    run_cli,
)


def normalize_prediction(text: str) -> str:
    return str(text).strip().rstrip(".").strip().lower()


def load_predictions(path: str) -> dict[str, str]:
    preds = {}
    for r in load_jsonl(path, "predictions file"):
        if "question_id" not in r:
            raise ScorerInputError(f"{path}: a line lacks 'question_id'")
        preds[qid_key(r["question_id"])] = normalize_prediction(r.get("text", ""))
    return preds


def write_official_predictions(preds: dict[str, str], out: str) -> None:
    parent = os.path.dirname(out)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump([{"questionId": qid, "prediction": p} for qid, p in preds.items()], fh)


def evaluate(questions_file: str, predictions_file: str) -> dict:
    questions = load_json(questions_file, "GQA questions file")
    if not isinstance(questions, dict):
        raise ScorerInputError(f"{questions_file}: expected a JSON object keyed by question id")
    preds = load_predictions(predictions_file)
    correct = total = 0
    by_type: dict[str, list[int]] = {}
    unknown = 0
    for qid, pred in preds.items():
        q = questions.get(qid)
        if q is None:
            unknown += 1
            continue
        gold = str(q.get("answer", "")).strip().lower()
        ok = int(pred == gold)
        correct += ok
        total += 1
        stype = (q.get("types") or {}).get("structural")
        if stype:
            by_type.setdefault(stype, [0, 0])
            by_type[stype][0] += ok
            by_type[stype][1] += 1
    return {
        "benchmark": "gqa",
        "accuracy": 100.0 * correct / total if total else 0.0,
        "correct": correct,
        "num_samples": total,
        "num_questions": len(questions),
        "num_unknown_predictions": unknown,
        "by_structural_type": {k: 100.0 * c / n for k, (c, n) in sorted(by_type.items())},
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.eval_gqa",
                                description="GQA testdev-balanced exact-match accuracy (and official-format conversion).")
    p.add_argument("--questions", default=None,
                   help="testdev_balanced_questions.json (not needed with --convert-only)")
    p.add_argument("--predictions", required=True, help="answers jsonl (question_id, text)")
    p.add_argument("--convert-only", metavar="OUT", default=None,
                   help="only write the official predictions json (questionId/prediction) to OUT")
    p.add_argument("--convert", metavar="OUT", default=None,
                   help="also write the official predictions json to OUT, then score")
    add_score_args(p)
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.convert_only:
        preds = load_predictions(args.predictions)
        write_official_predictions(preds, args.convert_only)
        print(f"wrote {len(preds)} predictions to {args.convert_only}")
        return {"converted": len(preds)}
    if not args.questions:
        build_parser().error("--questions is required unless --convert-only is given")
    if args.convert:
        write_official_predictions(load_predictions(args.predictions), args.convert)
    res = evaluate(args.questions, args.predictions)
    if res["num_unknown_predictions"]:
        print(f"warning: {res['num_unknown_predictions']} prediction(s) have ids not in the questions file")
    if res["num_samples"] < res["num_questions"]:
        print(f"note: {res['num_questions'] - res['num_samples']} of {res['num_questions']} questions have no prediction")
    for stype, acc in res["by_structural_type"].items():
        print(f"  {stype}: {acc:.2f}%")
    maybe_write_score(args, "gqa", res["accuracy"], result_file=args.predictions, num_samples=res["num_samples"],
                      details={"by_structural_type": res["by_structural_type"]})
    print(f"Samples: {res['num_samples']}")
    print(f"GQA accuracy: {res['accuracy']:.2f}%")
    return res


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
