"""LLaVA's ``scripts/convert_mmbench_for_submission.py``: MMBench answers -> submission xlsx.

``--annotation-file TSV --result-dir DIR --upload-dir OUT --experiment NAME`` reads
``DIR/NAME.jsonl`` and writes ``OUT/NAME.xlsx`` with the original's columns (``index, question,
A, B, C, D, prediction, answer, split``; see :func:`llava.eval.eval_mmbench.write_submission`).
Every TSV row needs an answer (coverage rules: :mod:`llava.eval.answer_coverage`).
"""

from __future__ import annotations

import argparse
import os

from llava.eval.eval_mmbench import load_tsv, read_answers, write_submission
from llava.eval.scoring_utils import add_coverage_args, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.convert_mmbench_for_submission",
                                description="Convert MMBench answers to the submission xlsx.")
    p.add_argument("--annotation-file", required=True, help="MMBench TSV")
    p.add_argument("--result-dir", required=True, help="folder holding <experiment>.jsonl")
    p.add_argument("--upload-dir", required=True, help="folder to write <experiment>.xlsx into")
    p.add_argument("--experiment", required=True, help="answers file name without .jsonl")
    add_coverage_args(p)
    return p


def _main(argv=None) -> str:
    args = build_parser().parse_args(argv)
    result_file = os.path.join(args.result_dir, f"{args.experiment}.jsonl")
    out = os.path.join(args.upload_dir, f"{args.experiment}.xlsx")
    df = load_tsv(args.annotation_file)
    usable, _ = read_answers(df, result_file, allow_partial=args.allow_partial, verb="convert")
    n = write_submission(df, usable, out)
    print(f"wrote {out} ({n} rows with a prediction)")
    return out


def main(argv=None) -> str:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
