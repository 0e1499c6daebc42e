"""One generation run, start to end: checks, lock, resume, model, generation, merge, summary."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext

from .answers_io import AnswerWriter, consolidate, part_files, part_path, read_all
from .checkpoint import checkpoint_identity
from .dist import Dist
from .errors import RunError, RunFailed
from .flags import check_args, resolve_device, resolve_dtype
from .generate import load_generator
from .lock import AnswersLock
from .questions import Item, get_chunk, questions_fingerprint, record_key
from .run_config import check_answers_belong, check_resume, run_config, write_records


def _batches(items: list, size: int):
    for i in range(0, len(items), max(1, size)):
        yield items[i:i + size]


def _compressor(args: argparse.Namespace):
    from llava.compression.cli import compressor_from_args

    try:
        return compressor_from_args(args)
    except (ValueError, TypeError) as e:
        raise RunError(str(e)) from None
    except SystemExit as e:  # a flag the method does not take: same exit code as every set-up error
        raise RunError(str(e.code).removeprefix("error: ")) from None


def run(args: argparse.Namespace, items: list[Item], *, driver: str, prompt_options: dict | None = None) -> dict:
    """Answer ``items`` (the whole question file, in its order) into ``args.answers_file``.

    Returns a summary dict (``total``, ``answered_now``, ``errors_now``, ``skipped``; on rank 0
    also ``answers`` and ``errors`` over the whole (chunk of the) question file). Raises
    :class:`RunError` for anything wrong before the first answer, :class:`RunFailed` when no
    question could be answered.
    """
    from llava.compression.cli import compression_config
    from llava.mm_utils import get_model_name_from_path

    check_args(args)
    compressor = _compressor(args)
    model_name = args.model_name or get_model_name_from_path(args.model_path)
    questions = {"count": len(items), "fingerprint": questions_fingerprint(items)}
    items = get_chunk(items, args.num_chunks, args.chunk_idx)
    dist = Dist()
    try:
        checkpoint = checkpoint_identity(args.model_path)
        device = resolve_device(args.device, dist.local_rank, dist.world)
        dtype = resolve_dtype(args.dtype, device, args.model_path)
        cfg = run_config(args, driver=driver, model_name=model_name, checkpoint=checkpoint, dtype=dtype,
                         compression=compression_config(compressor), prompt_options=prompt_options or {},
                         questions=questions, world_size=dist.world)
        with AnswersLock(args.answers_file) if dist.is_main else nullcontext():
            return _run_locked(args, items, cfg, dist, driver, model_name, compressor, device, dtype)
    finally:
        dist.close()


def _run_locked(args, items: list[Item], cfg: dict, dist: Dist, driver: str, model_name: str, compressor,
                device: str, dtype: str) -> dict:
    answers_file = args.answers_file
    if dist.is_main:
        os.makedirs(os.path.dirname(os.path.abspath(answers_file)), exist_ok=True)
        if args.overwrite:
            for p in [answers_file, *part_files(answers_file)]:
                if os.path.exists(p):
                    os.remove(p)
        records = read_all(answers_file)
        check_resume(args, cfg, has_answers=bool(records))
        check_answers_belong(answers_file, records, items, args.force)
    dist.barrier()
    # Nothing is written before this point, and nothing but the lock until the model is loaded.
    records = read_all(answers_file)
    done = {record_key(r) for r in records if args.keep_errors or "error" not in r}
    todo = [it for it in items if it.key not in done]
    gen = load_generator(args, model_name, compressor, device, dtype) if todo else None
    dist.barrier()  # every rank has its todo list before rank 0 rewrites the file
    if dist.is_main:
        consolidate(answers_file, items)
        write_records(args, cfg)
    dist.barrier()

    mine = dist.share(todo)
    out_path = answers_file if dist.world == 1 else part_path(answers_file, dist.rank, dist.world)
    n_new = n_err = 0
    if mine:
        from tqdm import tqdm

        with AnswerWriter(out_path) as writer, tqdm(total=len(mine), desc=driver, disable=not dist.is_main,
                                                     dynamic_ncols=True) as bar:
            for batch in _batches(mine, args.batch_size):
                for rec in gen.answer(batch):
                    writer.write(rec)
                    if "error" in rec:
                        n_err += 1
                        bar.write(f"[{driver}] question {rec.get('question_id')}: {rec['error']}", file=sys.stderr)
                    else:
                        n_new += 1
                bar.update(len(batch))
    dist.barrier()
    summary = {"total": len(items), "answered_now": n_new, "errors_now": n_err, "skipped": len(items) - len(todo)}
    if dist.is_main:
        final = consolidate(answers_file, items)
        keys = {it.key for it in items}
        mine_final = [r for r in final if record_key(r) in keys]
        failed = sum("error" in r for r in mine_final)
        summary.update(errors=failed, answers=len(mine_final))
        print(f"[{driver}] {len(items)} questions: {len(mine_final) - failed} answered, {failed} failed "
              f"({len(todo)} done in this run, {summary['skipped']} earlier) -> {answers_file}", flush=True)
        if items and failed == len(items):
            first = next(r["error"] for r in mine_final if "error" in r)
            raise RunFailed(f"all {len(items)} questions failed (first: {first}); nothing to score in {answers_file}")
    return summary


__all__ = ["run"]
