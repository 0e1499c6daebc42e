"""The run's configuration record, and the checks that keep runs from mixing.

Two files are written next to the answers: ``<answers stem>.config.json`` (everything below,
plus the chunk fields of this file) and ``config.json`` in the same folder (the same minus the
per-file fields — what :mod:`llava.eval.summarize` and the scorers read). One answers folder
holds one run configuration.

Resuming an answers file that holds answers is refused

* always (``--overwrite`` starts afresh) when the record names another model, checkpoint
  (:mod:`llava.eval.runs.checkpoint`), weights dtype, compression, generation setting or prompt
  option, or another driver;
* unless ``--force`` when there is no record, or the record names another question file
  (content fingerprint: another benchmark, split or version) or another image folder, or the
  file holds answers to questions not in this question file (or chunk).

A new answers file in a folder whose ``config.json`` describes another run is refused unless
``--overwrite`` (or ``--force``, for a differing question file / image folder only).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
from collections.abc import Sequence

from .answers_io import answers_stem, write_atomic
from .errors import RunError
from .questions import Item, record_key

# Settings that make answers another model's: never resumed across.
HARD_KEYS = ("driver", "model", "checkpoint.fingerprint", "dtype", "compression", "generation", "prompt_options")
# What the answers were asked from: resumed across only with --force.
SOFT_KEYS = ("questions.fingerprint", "image_folder")
# Fields of the per-file record that are not in the folder's config.json.
PER_FILE_KEYS = ("batch_size", "world_size", "num_chunks", "chunk_idx", "answers_file", "created")


def run_config(args: argparse.Namespace, *, driver: str, model_name: str, checkpoint: dict, dtype: str,
               compression: dict, prompt_options: dict, questions: dict, world_size: int) -> dict:
    """The run's configuration record (without the per-file chunk fields)."""
    return {
        "driver": driver,
        "model": model_name,
        "model_path": os.path.abspath(args.model_path),
        "model_base": args.model_base,
        "checkpoint": checkpoint,
        "dtype": dtype,
        "compression": compression,
        "generation": {
            "conv_mode": args.conv_mode, "temperature": args.temperature, "top_p": args.top_p,
            "num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
        },
        "prompt_options": prompt_options,
        "question_file": os.path.abspath(args.question_file),
        "questions": questions,
        "image_folder": os.path.realpath(args.image_folder) if args.image_folder else None,
        "batch_size": args.batch_size,
        "world_size": world_size,
    }


def config_paths(answers_file: str) -> tuple[str, str]:
    """``(<stem>.config.json, <answers dir>/config.json)``."""
    return answers_stem(answers_file) + ".config.json", os.path.join(
        os.path.dirname(os.path.abspath(answers_file)), "config.json")


def load_record(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
        return obj if isinstance(obj, dict) else None
    except (OSError, ValueError):
        return None


def _get(cfg: dict, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def differences(old: dict, new: dict, keys: Sequence[str]) -> list[str]:
    """``key: old -> new`` for every key in ``keys`` whose value differs."""
    return [f"{k}: {json.dumps(_get(old, k))} -> {json.dumps(_get(new, k))}"
            for k in keys if _get(old, k) != _get(new, k)]


def check_resume(args: argparse.Namespace, cfg: dict, has_answers: bool) -> None:
    """Refuse to add to answers, or to a folder, made by another run (see the module doc)."""
    answers = args.answers_file
    stem_cfg, dir_cfg = config_paths(answers)
    old_stem, old_dir = load_record(stem_cfg), load_record(dir_cfg)
    if has_answers:
        record = old_stem if old_stem is not None else old_dir
        if record is None:
            if not args.force:
                raise RunError(
                    f"{answers} holds answers but no config record ({stem_cfg} or {dir_cfg}): which model and "
                    "settings made them is unknown. Use --overwrite to start afresh, or --force to resume anyway")
            return
        hard = differences(record, cfg, HARD_KEYS)
        if hard:
            raise RunError(f"{answers} holds answers made with other settings ({'; '.join(hard)}). "
                           "Use another --answers-file, or --overwrite to start afresh.")
        soft = differences(record, cfg, SOFT_KEYS)
        if soft and not args.force:
            raise RunError(f"{answers} holds answers to other questions ({'; '.join(soft)}). Use another "
                           "--answers-file, --overwrite to start afresh, or --force to resume anyway.")
    if old_dir is not None and not args.overwrite:
        hard = differences(old_dir, cfg, HARD_KEYS)
        soft = [] if args.force else differences(old_dir, cfg, SOFT_KEYS)
        if hard or soft:
            raise RunError(f"{dir_cfg} records another run in this folder ({'; '.join(hard + soft)}); keep one "
                           "run per folder: use another folder, or --overwrite to replace that record.")


def check_answers_belong(answers_file: str, records: Sequence[dict], items: Sequence[Item], force: bool) -> None:
    """Refuse (unless ``force``) answers to questions that are not in ``items``."""
    keys = {it.key for it in items}
    stray = [r for r in records if record_key(r) not in keys]
    if stray and not force:
        first = ", ".join(json.dumps(r.get("question_id")) for r in stray[:3])
        raise RunError(f"{answers_file} holds {len(stray)} answer(s) to questions that are not in this question "
                       f"file or chunk (first: {first}). Use another --answers-file, --overwrite to start afresh, "
                       "or --force to keep them.")


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _dump(obj: dict) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def write_records(args: argparse.Namespace, cfg: dict) -> None:
    """Write ``<stem>.config.json`` and, if it changed, the folder's ``config.json``."""
    stem_cfg, dir_cfg = config_paths(args.answers_file)
    full = {**cfg, "num_chunks": args.num_chunks, "chunk_idx": args.chunk_idx,
            "answers_file": os.path.abspath(args.answers_file), "created": _now()}
    write_atomic(stem_cfg, _dump(full))
    shared = {k: v for k, v in cfg.items() if k not in PER_FILE_KEYS}
    old_dir = load_record(dir_cfg)
    if old_dir is not None and {k: v for k, v in old_dir.items() if k != "created"} == shared:
        return
    write_atomic(dir_cfg, _dump({**shared, "created": _now()}))


__all__ = [
    "HARD_KEYS", "SOFT_KEYS", "check_answers_belong", "check_resume", "config_paths", "differences",
    "load_record", "run_config", "write_records",
]
