"""GQA (testdev-balanced) scorer: LLaVA's ``scripts/convert_gqa_for_eval.py`` followed by GQA's
official ``eval.py --tier testdev_balanced``, in one step.

Reads
  * ``--questions`` ``testdev_balanced_questions.json`` (``{question_id: {"answer", "isBalanced",
    "types": {"structural", ...}, ...}}``);
  * ``--predictions`` answers jsonl (``question_id, text``) — or the official predictions file
    (a JSON list of ``{"questionId", "prediction"}``, as written by the converter).

As the originals: a prediction is ``text.rstrip('.').lower()`` (no ``strip()``: ``"left "`` stays
``"left "``); questions with ``isBalanced: false`` are skipped; every balanced question needs a
prediction; accuracy is the exact string match with the question's ``answer`` (also split into
``Binary`` and ``Open``, by structural type ``query``). The official predictions file lists the
ids **as given** in the answers: GQA's ids are JSON strings and ``eval.py`` looks them up as such,
so an id written as a number is refused (``--lenient`` writes it as a string).

``--convert OUT`` also writes the official predictions file; ``--convert-only OUT`` writes it and
stops (``scripts/convert_gqa_for_eval.py`` / ``python -m llava.eval.convert_gqa_for_eval`` take
the original ``--src --dst`` command line). ``--tier T`` works like ``eval.py --tier T`` in the GQA
data folder: ``--questions`` defaults to ``T_questions.json`` and ``--predictions`` to
``T_predictions.json``.

Prints the coverage counts, ``eval.py``'s ``Binary``/``Open``/``Accuracy`` lines and, last,
``GQA accuracy: XX.XX%``.
"""

from __future__ import annotations

import argparse

from llava.eval.answer_coverage import Coverage, Tally, check_coverage, is_error_entry
from llava.eval.ids import qid_key
from llava.eval.scoring_utils import (
    ScorerInputError,
    add_scorer_args,
    dump_json,
    finish,
    load_json,
    load_jsonl,
    require_file,
    run_cli,
)

LENIENT_HELP = "Accept question ids written as numbers (they are written as strings to the predictions file)."


def convert_prediction(text: str) -> str:
    """LLaVA's conversion of an answer to a GQA prediction."""
    return str(text).rstrip(".").lower()


def load_questions(path: str) -> dict:
    questions = load_json(path, "GQA questions file")
    if not isinstance(questions, dict):
        raise ScorerInputError(f"{path}: expected a JSON object keyed by question id")
    return questions


def balanced_ids(questions: dict) -> list[str]:
    return [qid for qid, q in questions.items() if q.get("isBalanced", True)]


def _is_json_list(path: str) -> bool:
    """True if the file's first non-blank character is ``[`` (an official predictions file)."""
    with open(path, encoding="utf-8") as fh:
        for chunk in iter(lambda: fh.read(4096), ""):
            head = chunk.lstrip()
            if head:
                return head[0] == "["
    return False


def read_predictions(path: str, questions: dict | None, *, allow_partial: bool = False, lenient: bool = False,
                     verb: str = "score") -> tuple[list[dict], Coverage]:
    """The usable predictions of ``path`` as official entries ``{"questionId", "prediction"}``.

    With ``questions`` the coverage is checked against its balanced questions; without, only error
    entries, duplicates and emptiness can be.
    """
    official = _is_json_list(require_file(path, "predictions file"))
    if official:
        raw = load_json(path, "GQA predictions file")
        if not all(isinstance(p, dict) and {"questionId", "prediction"} <= set(p) for p in raw):
            raise ScorerInputError(f"{path}: expected a list of {{\"questionId\", \"prediction\"}} objects")
        records = [{"question_id": p["questionId"], "text": p["prediction"]} for p in raw]
    else:
        records = load_jsonl(path, "predictions file")
    known = set(questions) if questions is not None else None
    expected = balanced_ids(questions) if questions is not None else list(
        dict.fromkeys(qid_key(r.get("question_id")) for r in records if not is_error_entry(r)))
    tally = Tally(expected)
    entries = []
    for r in records:
        qid = r.get("question_id")
        if not is_error_entry(r) and not isinstance(qid, str) and not lenient:
            raise ScorerInputError(
                f"{path}: question id {qid!r} is a JSON {type(qid).__name__}; GQA's ids are strings and the official "
                f"eval.py would not find it ({LENIENT_HELP.lower()[:-1]} with --lenient)")
        key = qid_key(qid)
        text = str(r.get("text", ""))
        entry = {"questionId": qid if not lenient else key,
                 "prediction": text if official else convert_prediction(text)}
        if known is not None and key in known and not questions[key].get("isBalanced", True):
            if not is_error_entry(r):
                entries.append(entry)  # written, but eval.py does not score unbalanced questions
            continue
        if tally.add(key, error=is_error_entry(r)):
            entries.append(entry)
    coverage = tally.finish()
    check_coverage(coverage, path, allow_partial, verb=verb)
    return entries, coverage


def write_official_predictions(entries: list[dict], out: str) -> None:
    """The converter's output: ``json.dump`` of the list, default formatting."""
    dump_json(out, entries)


def evaluate(questions: dict, entries: list[dict]) -> dict:
    """``eval.py``'s accuracy, binary/open and per-structural-type scores (percent)."""
    preds = {qid_key(e["questionId"]): e["prediction"] for e in entries}
    scores: dict[str, list[float]] = {"accuracy": [], "binary": [], "open": []}
    by_type: dict[str, list[float]] = {}
    for qid in balanced_ids(questions):
        if qid not in preds:
            continue  # only with --allow-partial
        q = questions[qid]
        score = float(1 if preds[qid] == q["answer"] else 0)
        stype = (q.get("types") or {}).get("structural")
        scores["accuracy"].append(score)
        scores["open" if stype == "query" else "binary"].append(score)
        by_type.setdefault(str(stype), []).append(score)

    def avg(values: list[float]) -> float:
        return float(sum(values)) / len(values) * 100 if values else 0.0

    return {"benchmark": "gqa", "accuracy": avg(scores["accuracy"]), "binary": avg(scores["binary"]),
            "open": avg(scores["open"]), "num_samples": len(scores["accuracy"]),
            "by_structural_type": {k: (avg(v), len(v)) for k, v in sorted(by_type.items())}}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.eval_gqa",
                                description="GQA testdev-balanced accuracy (LLaVA's converter + GQA's eval.py).")
    p.add_argument("--questions", default=None, help="testdev_balanced_questions.json")
    p.add_argument("--predictions", default=None,
                   help="answers jsonl (question_id, text) or the official predictions json")
    p.add_argument("--tier", default=None,
                   help="as eval.py: --questions defaults to TIER_questions.json, --predictions to TIER_predictions.json")
    p.add_argument("--convert-only", metavar="OUT", default=None,
                   help="only write the official predictions json (questionId, prediction) to OUT")
    p.add_argument("--convert", metavar="OUT", default=None, help="also write the official predictions json to OUT")
    add_scorer_args(p, lenient=LENIENT_HELP)
    return p


def _main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tier:
        args.questions = args.questions or f"{args.tier}_questions.json"
        args.predictions = args.predictions or f"{args.tier}_predictions.json"
    if not args.predictions:
        parser.error("--predictions is required (or --tier)")
    if args.convert_only:
        questions = load_questions(args.questions) if args.questions else None
        entries, _ = read_predictions(args.predictions, questions, allow_partial=args.allow_partial,
                                      lenient=args.lenient, verb="convert")
        write_official_predictions(entries, args.convert_only)
        print(f"wrote {len(entries)} predictions to {args.convert_only}")
        return {"converted": len(entries)}
    if not args.questions:
        parser.error("--questions is required unless --convert-only is given")
    questions = load_questions(args.questions)
    entries, coverage = read_predictions(args.predictions, questions, allow_partial=args.allow_partial,
                                         lenient=args.lenient)
    if args.convert:
        write_official_predictions(entries, args.convert)
    res = evaluate(questions, entries)
    print(f"Binary: {res['binary']:.2f}%")
    print(f"Open: {res['open']:.2f}%")
    print(f"Accuracy: {res['accuracy']:.2f}%")
    print("Accuracy / structural type:")
    for stype, (acc, n) in res["by_structural_type"].items():
        print(f"  {stype.capitalize()}: {acc:.2f}% ({n} questions)")
    finish(args, "gqa", res["accuracy"], f"GQA accuracy: {res['accuracy']:.2f}%", coverage=coverage,
           result_file=args.predictions, num_samples=res["num_samples"],
           details={"binary": res["binary"], "open": res["open"],
                    "by_structural_type": {k: v[0] for k, v in res["by_structural_type"].items()}})
    return {**res, "coverage": coverage}


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
