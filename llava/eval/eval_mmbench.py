"""MMBench / MMBench-CN (dev) offline scorer with CircularEval, and the submission spreadsheet.

Reads
  * ``--annotation-file`` the MMBench TSV (``mmbench_dev_20230712.tsv`` or
    ``mmbench_dev_cn_20231003.tsv``): columns ``index, question, hint, A, B, C, D[, E], answer,
    category, l2-category, split, image`` (base64) and maybe ``source``, ``comment``; empty option
    cells mean the option does not exist.  Circular copies of a question are extra rows whose
    index is the original index + k*1_000_000 with the options rotated.
  * ``--result-file`` answers jsonl: ``{"question_id": <TSV index>, "text": ..., ...}``.  Answers
    written for in-process rotations (``"round_id": k`` and optionally ``"options": [rotated option
    texts]``, same ``question_id`` for every round) are also understood: round k's options are
    the original ones rotated left by k.

Letter parsing: ``A``, ``A.``, ``(A)``, ``A: ...``, ``The answer is B``, ``Option C``,
``答案：A``, ``选项A``, the text of exactly one option, or exactly one stand-alone option letter;
otherwise the answer is ``FAILED`` (wrong).

CircularEval: every question ``index mod 1_000_000`` is right only if all its rotations (TSV rows
of that group plus answered rounds) are answered and right.  Accuracy is reported overall, per
``category`` and per ``l2-category``, over the questions that have at least one answer.

``--upload-xlsx OUT.xlsx`` writes the submission spreadsheet: the TSV rows without the image
column plus a ``prediction`` column holding the raw answers.  The last printed line is
``MMBench CircularEval accuracy: XX.XX%``.
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
    require_file,
    run_cli,
)

CIRCULAR_STRIDE = 1_000_000
OPTION_LETTERS = "ABCDEFGHI"

_FULLWIDTH = str.maketrans({chr(0xFF21 + i): chr(0x41 + i) for i in range(26)} |
                           {"（": "(", "）": ")", "：": ":", "。": ".", "，": ",", "、": ","})
_PAREN_LEAD = re.compile(r"^\s*\(([A-Z])\)")
_LETTER_LEAD = re.compile(r"^\s*([A-Z])(?:$|[.:,)])")
_EN_CUE = re.compile(r"(?i:answer|option|choice)\s*(?i:is|should be|would be)?\s*:?\s*\(?([A-Z])(?![A-Za-z])")
_CN_CUE = re.compile(r"(?:答案|选项|选择|应选|选)\s*(?:是|为|应该是|应为|应当是)?\s*:?\s*\(?([A-Z])(?![A-Za-z])")
# words that can follow the letter A but not the article "a" ("A or B", "A is right")
_NOT_AFTER_ARTICLE = {"or", "and", "is", "was", "seems", "should", "would", "because", "since", "as", "if", "then"}
_STANDALONE = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])")


def _norm_text(s: str) -> str:
    return " ".join(str(s).strip().rstrip(".").lower().split())


def parse_choice(text: str, options: dict[str, str]) -> str:
    """Letter chosen by ``text`` among ``options`` (letter -> option text), or ``"FAILED"``."""
    valid = set(options)
    s = str(text).translate(_FULLWIDTH).strip()
    bare = s.rstrip(".").strip()
    if bare in valid:
        return bare
    for rx in (_PAREN_LEAD, _LETTER_LEAD):
        m = rx.match(s)
        if m and m.group(1) in valid:
            return m.group(1)
    m = re.match(r"^([A-Z])\s+(.+)$", s, re.S)
    if m and m.group(1) in valid and _norm_text(m.group(2)) == _norm_text(options[m.group(1)]):
        return m.group(1)
    cued = {x for rx in (_EN_CUE, _CN_CUE) for x in rx.findall(s)} & valid
    if len(cued) == 1:
        return cued.pop()
    by_text = [k for k, v in options.items() if _norm_text(v) and _norm_text(v) == _norm_text(s)]
    if len(by_text) == 1:
        return by_text[0]
    loose = set()
    for m in _STANDALONE.finditer(s):
        letter = m.group(1)
        if letter == "A":
            nxt = re.match(r" ([a-z]+)", s[m.end():])
            if nxt and nxt.group(1) not in _NOT_AFTER_ARTICLE:
                continue  # "A dog ..." - the English article, not option A
        loose.add(letter)
    loose &= valid
    if len(loose) == 1:
        return loose.pop()
    return "FAILED"


def load_tsv(path: str):
    """Read the TSV as strings (empty cells stay ""), without the bulky base64 image column."""
    import pandas as pd

    require_file(path, "MMBench annotation file")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, usecols=lambda c: c != "image")
    except Exception as exc:  # pandas raises several parser error types
        raise ScorerInputError(f"{path}: cannot read TSV ({exc})") from None
    if "index" not in df.columns:
        raise ScorerInputError(f"{path}: no 'index' column")
    return df


def option_letters(df) -> list[str]:
    return [c for c in OPTION_LETTERS if c in df.columns]


def _row_options(row: dict, letters: list[str]) -> list[tuple[str, str]]:
    out = []
    for c in letters:
        v = row.get(c, "")
        if v is None:
            continue
        v = str(v)
        if v.strip() == "" or v.strip().lower() == "nan":
            continue
        out.append((c, v))
    return out


def evaluate(annotation_file: str, result_file: str, df=None) -> dict:
    if df is None:
        df = load_tsv(annotation_file)
    if "answer" not in df.columns:
        raise ScorerInputError(f"{annotation_file}: no 'answer' column (test split?) - only --upload-xlsx is possible")
    letters = option_letters(df)
    rows: dict[int, dict] = {}
    for rec in df.to_dict("records"):
        try:
            rows[int(float(rec["index"]))] = rec
        except ValueError:
            raise ScorerInputError(f"{annotation_file}: bad index {rec['index']!r}") from None

    units: dict[tuple[int, int], dict] = {}
    unmatched = []
    for r in load_jsonl(result_file, "result file"):
        try:
            idx = int(float(str(r.get("question_id")).strip()))
        except ValueError:
            unmatched.append(r.get("question_id"))
            continue
        row = rows.get(idx)
        if row is None:
            unmatched.append(idx)
            continue
        base = _row_options(row, letters)
        texts = [t for _, t in base]
        rnd = int(r.get("round_id") or 0)
        if isinstance(r.get("options"), list) and r["options"]:
            cur = [str(x) for x in r["options"]]
        elif rnd:
            k = rnd % len(texts) if texts else 0
            cur = texts[k:] + texts[:k]
        else:
            cur = texts
        opts = {OPTION_LETTERS[i]: t for i, t in enumerate(cur)}
        gold = str(row.get("answer", "")).strip()
        if cur != texts:
            gold_text = dict(base).get(gold)
            gold = next((k for k, t in opts.items() if t == gold_text), "?")
        pred = parse_choice(r.get("text", ""), opts)
        units[(idx, rnd)] = {"index": idx, "round": rnd, "pred": pred, "gold": gold, "correct": pred == gold}

    # CircularEval grouping
    groups: dict[int, dict] = {}
    for idx in rows:
        groups.setdefault(idx % CIRCULAR_STRIDE, {"expected": set(), "units": {}})["expected"].add((idx, 0))
    for key, u in units.items():
        groups.setdefault(key[0] % CIRCULAR_STRIDE, {"expected": set(), "units": {}})["units"][key] = u
    scored = {g: v for g, v in groups.items() if v["units"]}
    right = {}
    incomplete = 0
    for g, v in scored.items():
        expected = v["expected"] | set(v["units"])
        complete = all(k in v["units"] for k in expected)
        incomplete += not complete
        right[g] = complete and all(u["correct"] for u in v["units"].values())

    def meta(g, field):
        row = rows.get(g)
        if row is None:  # no original row in the TSV: use the lowest-index answered rotation
            row = rows[min(scored[g]["units"])[0]]
        return str(row.get(field, "")) or "-"

    by_cat: dict[str, list[int]] = {}
    by_l2: dict[str, list[int]] = {}
    for g, ok in right.items():
        for table, field in ((by_cat, "category"), (by_l2, "l2-category")):
            acc = table.setdefault(meta(g, field), [0, 0])
            acc[0] += ok
            acc[1] += 1
    n = len(right)
    n_units = len(units)
    return {
        "benchmark": "mmbench",
        "circular_accuracy": 100.0 * sum(right.values()) / n if n else 0.0,
        "single_accuracy": 100.0 * sum(u["correct"] for u in units.values()) / n_units if n_units else 0.0,
        "num_questions": n,
        "num_samples": n_units,
        "num_incomplete": incomplete,
        "num_failed_parse": sum(u["pred"] == "FAILED" for u in units.values()),
        "num_unmatched": len(unmatched),
        "per_category": {k: 100.0 * c / t for k, (c, t) in sorted(by_cat.items())},
        "per_l2_category": {k: 100.0 * c / t for k, (c, t) in sorted(by_l2.items())},
    }


def write_submission(annotation_file: str, result_file: str, out_xlsx: str, df=None) -> int:
    """Write the submission spreadsheet; returns the number of rows that got a prediction."""
    if df is None:
        df = load_tsv(annotation_file)
    preds: dict[int, str] = {}
    for r in load_jsonl(result_file, "result file"):
        if int(r.get("round_id") or 0) != 0:
            continue
        try:
            preds[int(float(str(r.get("question_id")).strip()))] = str(r.get("text", ""))
        except ValueError:
            continue
    out = df.copy()
    out["index"] = [int(float(x)) for x in out["index"]]
    letters = option_letters(out)
    pos = (list(out.columns).index(letters[-1]) + 1) if letters else len(out.columns)
    out.insert(pos, "prediction", [preds.get(i) for i in out["index"]])
    parent = os.path.dirname(out_xlsx)
    if parent:
        os.makedirs(parent, exist_ok=True)
    out.to_excel(out_xlsx, index=False, engine="openpyxl")
    return sum(i in preds for i in out["index"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.eval_mmbench",
                                description="MMBench / MMBench-CN dev CircularEval accuracy and submission xlsx.")
    p.add_argument("--annotation-file", required=True, help="mmbench_dev_20230712.tsv / mmbench_dev_cn_20231003.tsv")
    p.add_argument("--result-file", required=True, help="answers jsonl (question_id = TSV index, text)")
    p.add_argument("--upload-xlsx", default=None, metavar="OUT.xlsx", help="also write the submission spreadsheet")
    p.add_argument("--lang", choices=["auto", "en", "cn"], default="auto",
                   help="benchmark name for the score record: mmbench (en) or mmbench_cn; auto = from the file name")
    add_score_args(p)
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    lang = args.lang
    if lang == "auto":
        lang = "cn" if re.search(r"(^|[_\-.])cn([_\-.]|$)", os.path.basename(args.annotation_file).lower()) else "en"
    bench = "mmbench_cn" if lang == "cn" else "mmbench"
    df = load_tsv(args.annotation_file)
    if args.upload_xlsx:
        n = write_submission(args.annotation_file, args.result_file, args.upload_xlsx, df=df)
        print(f"wrote {args.upload_xlsx} ({n} rows with a prediction)")
        if "answer" not in df.columns:
            print("no 'answer' column in the TSV: nothing to score locally")
            return {"benchmark": bench, "upload_xlsx": args.upload_xlsx}
    res = evaluate(args.annotation_file, args.result_file, df=df)
    res["benchmark"] = bench
    if res["num_unmatched"]:
        print(f"warning: {res['num_unmatched']} answer(s) have an index not in the TSV")
    if res["num_incomplete"]:
        print(f"note: {res['num_incomplete']} question(s) lack an answer for some rotation (counted wrong)")
    print("per category:")
    for k, v in res["per_category"].items():
        print(f"  {k}: {v:.2f}%")
    print("per l2-category:")
    for k, v in res["per_l2_category"].items():
        print(f"  {k}: {v:.2f}%")
    print(f"{'MMBench-CN' if lang == 'cn' else 'MMBench'}: {res['num_questions']} questions, "
          f"{res['num_samples']} answers, {res['num_failed_parse']} unparsed; "
          f"single-pass accuracy {res['single_accuracy']:.2f}%")
    maybe_write_score(args, bench, res["circular_accuracy"], result_file=args.result_file,
                      num_samples=res["num_questions"],
                      details={"single_accuracy": res["single_accuracy"], "per_category": res["per_category"],
                               "per_l2_category": res["per_l2_category"]})
    print(f"MMBench CircularEval accuracy: {res['circular_accuracy']:.2f}%")
    return res


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
