"""LLaVA's ``scripts/convert_gqa_for_eval.py``: answers jsonl -> GQA's official predictions file.

``python -m llava.eval.convert_gqa_for_eval --src merge.jsonl --dst GQADIR/testdev_balanced_predictions.json``
writes ``[{"questionId": <id as given>, "prediction": text.rstrip('.').lower()}, ...]`` for GQA's
``eval.py`` (see :mod:`llava.eval.eval_gqa`, which also scores it). Coverage is checked against
``--questions``, by default ``<tier>_questions.json`` next to ``--dst`` when ``--dst`` is named
``<tier>_predictions.json`` (LLaVA's layout keeps both in GQA's data folder); without a questions
file only error entries, duplicates and emptiness can be checked.
"""

from __future__ import annotations

import argparse
import os

from llava.eval.eval_gqa import LENIENT_HELP, load_questions, read_predictions, write_official_predictions
from llava.eval.scoring_utils import add_coverage_args, run_cli

SUFFIX = "_predictions.json"


def default_questions(dst: str) -> str | None:
    name = os.path.basename(dst)
    if not name.endswith(SUFFIX):
        return None
    path = os.path.join(os.path.dirname(dst), name[: -len(SUFFIX)] + "_questions.json")
    return path if os.path.isfile(path) else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.convert_gqa_for_eval",
                                description="GQA answers jsonl -> official predictions json (for eval.py).")
    p.add_argument("--src", required=True, help="answers jsonl (question_id, text)")
    p.add_argument("--dst", required=True, help="predictions json to write, e.g. testdev_balanced_predictions.json")
    p.add_argument("--questions", default=None,
                   help="questions json to check coverage against (default: <tier>_questions.json next to --dst)")
    add_coverage_args(p, lenient=LENIENT_HELP)
    return p


def _main(argv=None) -> list[dict]:
    args = build_parser().parse_args(argv)
    qfile = args.questions or default_questions(args.dst)
    if qfile is None:
        print("note: no questions file (pass --questions): completeness not checked")
    entries, _ = read_predictions(args.src, load_questions(qfile) if qfile else None,
                                  allow_partial=args.allow_partial, lenient=args.lenient, verb="convert")
    write_official_predictions(entries, args.dst)
    print(f"wrote {len(entries)} predictions to {args.dst}")
    return entries


def main(argv=None) -> list[dict]:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
