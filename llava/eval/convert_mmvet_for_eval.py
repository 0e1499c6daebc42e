"""Convert MM-Vet answers to the grader's input format.

Reads ``--src`` (answers jsonl: ``question_id, text``; ``question_id`` is the MM-Vet sample
number, 0..217) and writes ``--dst``: ``{"v1_0": "answer", "v1_1": ..., ...}`` - the format of
the official MM-Vet grader and of :mod:`llava.eval.eval_mmvet`.
"""

from __future__ import annotations

import argparse
import json
import os

from llava.eval.scoring_utils import iter_jsonl, qid_key, run_cli


def convert(src: str) -> dict[str, str]:
    out = {}
    for r in iter_jsonl(src, "answers file"):
        qid = qid_key(r.get("question_id"))
        key = qid if qid.startswith("v1_") else f"v1_{qid}"
        out[key] = str(r.get("text", ""))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.convert_mmvet_for_eval",
                                description="MM-Vet answers jsonl -> {v1_<id>: answer} json.")
    p.add_argument("--src", required=True, help="answers jsonl (question_id, text)")
    p.add_argument("--dst", required=True, help="results json to write")
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    out = convert(args.src)
    parent = os.path.dirname(args.dst)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(args.dst, "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=2, ensure_ascii=False)
    print(f"wrote {len(out)} answers to {args.dst}")
    return out


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
