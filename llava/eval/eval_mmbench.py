"""MMBench / MMBench-CN (dev) scorer: VLMEvalKit's CircularEval with rule-based matching, and
LLaVA's submission spreadsheet (``scripts/convert_mmbench_for_submission.py``).

Reads
  * ``--annotation-file``: the MMBench TSV (``index, question, hint, A, B, C, D, answer,
    category, l2-category, split, image, ...``), read as pandas reads it by default, as
    VLMEvalKit and LLaVA's converter do (empty cells and the text ``None`` are missing values);
    circular copies of a question are rows with index + k·1,000,000 and rotated options;
  * ``--result-file``: answers jsonl ``{"question_id": <TSV index>, "text", ...}``. Answers of
    in-process rotations (``round_id`` k, ``options`` as shown) are understood too.

Scoring, as VLMEvalKit with the ``exact_matching`` policy: each answer is read as a letter
(:func:`llava.eval.mmbench_matching.can_infer`); a question (a TSV row with index < 1,000,000)
is right only if every row of its group (index mod 1,000,000) is answered and read as its
``answer`` — an unanswered row makes its question wrong; accuracy is over every question of the
TSV, also per ``category`` and ``l2-category``. ``--lenient`` also reads cue words and full-width
letters (:func:`llava.eval.mmbench_matching.parse_choice_lenient`).

``--upload-xlsx OUT`` writes the submission file as LLaVA's converter does: the TSV without
``hint, category, source, image, comment, l2-category``, a ``prediction`` column inserted as the
7th (``index, question, A, B, C, D, prediction, answer, split``), raw answer texts, empty cells
where the TSV has none. The last line printed is ``MMBench CircularEval accuracy: XX.XX%``.
"""

from __future__ import annotations

import argparse
import os
import re
import string

from llava.eval.answer_coverage import usable_answers
from llava.eval.ids import qid_key
from llava.eval.mmbench_matching import can_infer, parse_choice_lenient
from llava.eval.scoring_utils import (
    ScorerInputError,
    add_scorer_args,
    finish,
    load_jsonl,
    require_file,
    run_cli,
)

CIRCULAR_STRIDE = 1_000_000
LETTERS = string.ascii_uppercase
DROPPED_COLUMNS = ("hint", "category", "source", "image", "comment", "l2-category")
PREDICTION_POSITION = 6


def load_tsv(path: str):
    """The TSV as pandas reads it by default (missing values NaN), without the base64 image column."""
    import pandas as pd

    require_file(path, "MMBench annotation file")
    try:
        df = pd.read_csv(path, sep="\t", usecols=lambda c: c != "image")
    except Exception as exc:  # pandas raises several parser error types
        raise ScorerInputError(f"{path}: cannot read TSV ({exc})") from None
    if "index" not in df.columns:
        raise ScorerInputError(f"{path}: no 'index' column")
    return df


def choices_of(row: dict) -> dict:
    """VLMEvalKit's ``build_choices``: every letter column whose value is not missing."""
    import pandas as pd

    return {c: row[c] for c in LETTERS if c in row and not pd.isna(row[c])}


def _answer_key(rec: dict) -> tuple[str, int]:
    return qid_key(rec.get("question_id")), int(rec.get("round_id") or 0)


def _show(key: tuple[str, int]) -> str:
    return key[0] if key[1] == 0 else f"{key[0]} (round {key[1]})"


def read_answers(df, result_file: str, *, allow_partial: bool, verb: str = "score") -> tuple[dict, object]:
    """``{(index, round): answer record}`` of the usable answers, and the coverage."""
    records = load_jsonl(result_file, "result file")
    rounds = any(int(r.get("round_id") or 0) for r in records)
    rows = {qid_key(i): row for i, row in zip(df["index"], df.to_dict("records"))}
    expected = [(idx, k) for idx, row in rows.items() for k in range(len(choices_of(row)) if rounds else 1)]
    return usable_answers(records, expected, _answer_key, source=result_file, allow_partial=allow_partial,
                          verb=verb, show=_show)


def _unit_hit(row: dict, rec: dict | None, rnd: int, lenient: bool) -> bool:
    """Is the answer to round ``rnd`` of a TSV row (options rotated left by ``rnd``) read as right?"""
    if rec is None:
        return False
    base = choices_of(row)
    letters, texts = list(base), list(base.values())
    gold = str(row["answer"])
    if rnd:
        texts = texts[rnd:] + texts[:rnd]
        if gold in letters:
            gold = letters[(letters.index(gold) - rnd) % len(letters)]
    choices = dict(zip(letters, texts))
    text = str(rec.get("text", ""))
    return (parse_choice_lenient(text, choices) if lenient else can_infer(text, choices)) == gold


def evaluate(df, usable: dict, *, lenient: bool = False) -> dict:
    """CircularEval hits per question of the TSV, and the accuracies (percent)."""
    if "answer" not in df.columns:
        raise ScorerInputError("the TSV has no 'answer' column (a test split?): only --upload-xlsx is possible")
    rows = {qid_key(i): row for i, row in zip(df["index"], df.to_dict("records"))}
    all_rounds = any(rnd for _, rnd in usable)
    groups: dict[int, list[str]] = {}
    for idx in rows:
        groups.setdefault(int(float(idx)) % CIRCULAR_STRIDE, []).append(idx)
    hits = {}
    for idx in rows:
        g = int(float(idx))
        if g >= CIRCULAR_STRIDE:
            continue
        units = [(m, k) for m in groups[g] for k in range(len(choices_of(rows[m])) if all_rounds else 1)]
        hits[idx] = all(_unit_hit(rows[m], usable.get((m, k)), k, lenient) for m, k in units)

    def mean(keys: list[str]) -> float:
        return 100.0 * sum(hits[k] for k in keys) / len(keys)

    def by(field: str) -> dict[str, float]:
        out: dict[str, list[str]] = {}
        for k in hits:
            out.setdefault(str(rows[k].get(field)), []).append(k)
        return {name: mean(keys) for name, keys in sorted(out.items())}

    return {"benchmark": "mmbench", "circular_accuracy": mean(list(hits)), "num_questions": len(hits),
            "per_split": by("split") if "split" in df.columns else {},
            "per_category": by("category") if "category" in df.columns else {},
            "per_l2_category": by("l2-category") if "l2-category" in df.columns else {}}


def write_submission(df, usable: dict, out_xlsx: str) -> int:
    """LLaVA's submission spreadsheet (module doc); returns the number of rows with a prediction."""
    cur = df.drop(columns=[c for c in DROPPED_COLUMNS if c in df.columns])
    texts = {idx: str(rec.get("text", "")) for (idx, rnd), rec in usable.items() if rnd == 0}
    preds = [texts.get(qid_key(i)) for i in df["index"]]
    cur.insert(min(PREDICTION_POSITION, len(cur.columns)), "prediction", None)
    cur["prediction"] = preds
    parent = os.path.dirname(out_xlsx)
    if parent:
        os.makedirs(parent, exist_ok=True)
    cur.to_excel(out_xlsx, index=False, engine="openpyxl")
    return sum(p is not None for p in preds)


def is_cn(annotation_file: str) -> bool:
    return re.search(r"(^|[_\-.])cn([_\-.]|$)", os.path.basename(annotation_file).lower()) is not None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.eval_mmbench",
                                description="MMBench / MMBench-CN dev CircularEval accuracy (VLMEvalKit's matching) "
                                            "and the submission xlsx.")
    p.add_argument("--annotation-file", required=True, help="mmbench_dev_20230712.tsv / mmbench_dev_cn_20231003.tsv")
    p.add_argument("--result-file", required=True, help="answers jsonl (question_id = TSV index, text)")
    p.add_argument("--upload-xlsx", default=None, metavar="OUT.xlsx", help="also write the submission spreadsheet")
    p.add_argument("--lang", choices=["auto", "en", "cn"], default="auto",
                   help="benchmark name for the score record: mmbench (en) or mmbench_cn; auto = from the file name")
    add_scorer_args(p, lenient="Also read answers by cue words (答案是B, option C), full-width letters and a "
                               "unique stand-alone letter.")
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    lang = args.lang if args.lang != "auto" else ("cn" if is_cn(args.annotation_file) else "en")
    bench = "mmbench_cn" if lang == "cn" else "mmbench"
    df = load_tsv(args.annotation_file)
    usable, coverage = read_answers(df, args.result_file, allow_partial=args.allow_partial)
    if args.upload_xlsx:
        n = write_submission(df, usable, args.upload_xlsx)
        print(f"wrote {args.upload_xlsx} ({n} rows with a prediction)")
        if "answer" not in df.columns:
            print("no 'answer' column in the TSV: nothing to score locally")
            return {"benchmark": bench, "upload_xlsx": args.upload_xlsx, "coverage": coverage}
    res = evaluate(df, usable, lenient=args.lenient)
    res["benchmark"] = bench
    for title, table in (("split", res["per_split"]), ("category", res["per_category"]),
                         ("l2-category", res["per_l2_category"])):
        print(f"per {title}:")
        for k, v in table.items():
            print(f"  {k}: {v:.2f}%")
    finish(args, bench, res["circular_accuracy"], f"MMBench CircularEval accuracy: {res['circular_accuracy']:.2f}%",
           coverage=coverage, result_file=args.result_file, num_samples=res["num_questions"],
           details={"per_category": res["per_category"], "per_l2_category": res["per_l2_category"]})
    return {**res, "coverage": coverage}


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
