"""LLaVA's ``scripts/convert_mmvet_for_eval.py``: MM-Vet answers -> the grader's input.

Reads ``--src`` (answers jsonl: ``question_id`` = MM-Vet sample number, ``text``) and writes
``--dst``: ``{"v1_<question_id>": text, ...}`` (``json.dump(..., indent=2)``, as the original),
the input of MM-Vet's evaluator and of :mod:`llava.eval.eval_mmvet`. Coverage is checked against
``--mmvet-data`` (``mm-vet.json`` or its folder; by default ``../mm-vet.json`` from ``--dst``,
LLaVA's ``mm-vet/results/`` layout); without it only error entries, duplicates and emptiness can be.
"""

from __future__ import annotations

import argparse
import os

from llava.eval.answer_coverage import usable_answers
from llava.eval.scoring_utils import add_coverage_args, dump_json, load_json, load_jsonl, run_cli


def sample_key(question_id) -> str:
    """The original's key: ``f"v1_{question_id}"``."""
    return f"v1_{question_id}"


def default_mmvet_json(dst: str) -> str | None:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(dst))), "mm-vet.json")
    return path if os.path.isfile(path) else None


def convert(src: str, mmvet_json: str | None = None, *, allow_partial: bool = False) -> dict[str, str]:
    expected = list(load_json(mmvet_json, "MM-Vet data file (mm-vet.json)")) if mmvet_json else None
    usable, _ = usable_answers(load_jsonl(src, "answers file"), expected, lambda r: sample_key(r.get("question_id")),
                               source=src, allow_partial=allow_partial, verb="convert")
    return {k: r.get("text") for k, r in usable.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.convert_mmvet_for_eval",
                                description="MM-Vet answers jsonl -> {v1_<id>: answer} json.")
    p.add_argument("--src", required=True, help="answers jsonl (question_id, text)")
    p.add_argument("--dst", required=True, help="results json to write")
    p.add_argument("--mmvet-data", default=None,
                   help="mm-vet.json (or its folder) to check coverage against (default: ../mm-vet.json from --dst)")
    add_coverage_args(p)
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    ref = args.mmvet_data
    if ref and os.path.isdir(ref):
        ref = os.path.join(ref, "mm-vet.json")
    ref = ref or default_mmvet_json(args.dst)
    if ref is None:
        print("note: no mm-vet.json (pass --mmvet-data): completeness not checked")
    out = convert(args.src, ref, allow_partial=args.allow_partial)
    dump_json(args.dst, out, indent=2)
    print(f"wrote {len(out)} answers to {args.dst}")
    return out


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
