"""Write the MMBench / MMBench-CN submission spreadsheet (thin wrapper of :mod:`llava.eval.eval_mmbench`).

Reads ``--annotation-file`` (the MMBench TSV) and ``<result-dir>/<experiment>.jsonl`` (answers,
``question_id`` = TSV index, ``text``); writes ``<upload-dir>/<experiment>.xlsx``: the TSV rows
without the image column plus a ``prediction`` column with the raw answers.
"""

from __future__ import annotations

import argparse
import os

from llava.eval.eval_mmbench import write_submission
from llava.eval.scoring_utils import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.convert_mmbench_for_submission",
                                description="Convert MMBench answers to the submission xlsx.")
    p.add_argument("--annotation-file", required=True, help="MMBench TSV")
    p.add_argument("--result-dir", required=True, help="folder holding <experiment>.jsonl")
    p.add_argument("--upload-dir", required=True, help="folder to write <experiment>.xlsx into")
    p.add_argument("--experiment", required=True, help="answers file name without .jsonl")
    return p


def _main(argv=None) -> str:
    args = build_parser().parse_args(argv)
    result_file = os.path.join(args.result_dir, f"{args.experiment}.jsonl")
    out = os.path.join(args.upload_dir, f"{args.experiment}.xlsx")
    n = write_submission(args.annotation_file, result_file, out)
    print(f"wrote {out} ({n} rows with a prediction)")
    return out


def main(argv=None) -> str:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
