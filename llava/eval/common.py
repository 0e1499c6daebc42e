"""What the four generation drivers share: flags, model + compressor set-up, the batched
generation loop and the resumable, crash-safe answer writer.

The drivers (:mod:`llava.eval.model_vqa_loader`, :mod:`llava.eval.model_vqa_science`,
:mod:`llava.eval.model_vqa_mmbench`, :mod:`llava.eval.model_vqa`) only turn their benchmark's
question file into a list of :class:`Item` (prompt text + image source) and call :func:`run`.

Answer file (``--answers-file``, JSON lines, in question order)::

    {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}

``prompt`` is the user message as given to the model, without the ``<image>`` placeholder.
``metadata`` holds ``visual_tokens`` / ``visual_tokens_uncompressed`` (after / before
compression; 0 for text-only questions), ``grid``, ``thumbnail_kept``, ``crop_kept``,
``budgets`` (methods with per-crop budgets) and ``compression`` (the resolved compressor
config). MMBench answers also carry ``round_id``, ``options`` and ``option_char``. A question
whose id occurs several times in the question file (MME asks two questions per image under one
id) gets ``metadata.occurrence`` = 1, 2, ... on its repeats.

Error entries (missing / unreadable image, malformed question): ``{"question_id", "prompt",
"text": "", "error": reason, "answer_id", "model_id", "metadata": {"error": reason}}`` — the
run goes on and its last line reports how many failed. Malformed lines without a readable id get
``question_id: null`` and ``metadata.line`` (1-based line in the question file).

Run configuration: ``<answers stem>.config.json`` next to the answers (model, compression config,
generation settings, prompt options, chunking) and ``config.json`` in the same folder (the same
minus the per-file chunk fields — what :mod:`llava.eval.summarize` and the scorers read). One
answers folder therefore holds one run configuration; the benchmark scripts give each
(checkpoint, method, ratio) its own folder.

Resuming: a re-run skips questions already in the answers file (errors included; pass
``--retry-errors`` to retry them). Every line is flushed and fsync'd as written; a torn last
line (a kill in mid-write) is cut off on the next start. Resuming with a different model,
compression or generation setting is refused (``--overwrite`` starts afresh). The final file is
always in question order, so an interrupted + resumed run produces the same lines (up to
``answer_id``) as an uninterrupted one.

Data parallel: under ``torchrun --nproc_per_node N -m llava.eval.<driver> ...`` or ``accelerate
launch`` (``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`` on CPU) each
rank answers its share of the remaining questions into ``<stem>.part-<rank>-of-<N>.jsonl`` and
rank 0 merges them into the answers file in question order. ``--num-chunks/--chunk-idx`` shard
the question list first (one process per chunk, as in the original scripts).

Test hook: with ``LLAVA_EVAL_FAULT_AFTER=k`` in the environment the process writes ``k`` answers,
then half of the next line, and kills itself with SIGKILL.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import shortuuid

from llava.compression.cli import add_compression_args, compression_config, compressor_from_args

FAULT_ENV = "LLAVA_EVAL_FAULT_AFTER"

# Settings that must not change while an answers file is resumed.
_RESUME_KEYS = ("driver", "model", "compression", "generation", "prompt_options")


# ----------------------------------------------------------------------------- flags


def build_parser(description: str | None, *, max_new_tokens: int = 128) -> argparse.ArgumentParser:
    """The flags every driver takes (the original LLaVA eval scripts' names) + compression."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", required=True, help="local checkpoint folder")
    ap.add_argument("--model-base", default=None)
    ap.add_argument("--model-name", default=None,
                    help="name recorded as model_id and in config.json (default: the checkpoint folder's name)")
    ap.add_argument("--question-file", required=True)
    ap.add_argument("--image-folder", default="", help="folder the question file's image paths are relative to")
    ap.add_argument("--answers-file", required=True)
    ap.add_argument("--conv-mode", default="vicuna_v1")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ap.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=None)
    ap.add_argument("--num_beams", "--num-beams", dest="num_beams", type=int, default=1)
    ap.add_argument("--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int, default=max_new_tokens)
    ap.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=1,
                    help="questions per generate call (left-padded; same answers as 1)")
    ap.add_argument("--num-chunks", "--num_chunks", dest="num_chunks", type=int, default=1)
    ap.add_argument("--chunk-idx", "--chunk_idx", dest="chunk_idx", type=int, default=0)
    ap.add_argument("--device", default=None, help="default: cuda (this rank's GPU) if available, else cpu")
    ap.add_argument("--attn-implementation", default=None, choices=["sdpa", "flash_attention_2", "eager"])
    ap.add_argument("--retry-errors", action="store_true",
                    help="on resume, answer again the questions recorded as errors (default: keep them)")
    ap.add_argument("--overwrite", action="store_true", help="discard existing answers instead of resuming")
    add_compression_args(ap)
    return ap


# ----------------------------------------------------------------------------- questions


@dataclass
class Item:
    """One generation request: the user message and (optionally) its image.

    ``image`` is a path (joined to ``--image-folder``) or, with ``image_b64``, a base64 string;
    None means a text-only question. ``error`` marks a question that cannot be asked (it is
    written as an error entry). ``fields`` are extra top-level answer fields (MMBench rounds).
    """

    question_id: Any
    prompt: str = ""
    image: str | None = None
    image_b64: bool = False
    round_id: int = 0
    fields: dict = field(default_factory=dict)
    error: str | None = None
    line: int | None = None  # 1-based position in the question file (for id-less errors)
    occurrence: int = 0

    @property
    def key(self) -> tuple:
        return _key(self.question_id, self.round_id, self.occurrence, self.line)


def _key(question_id, round_id, occurrence, line) -> tuple:
    if question_id is None:
        return ("#line", int(line or 0), 0, 0)
    if isinstance(question_id, float) and question_id.is_integer():
        question_id = int(question_id)
    return ("id", str(question_id).strip(), int(round_id or 0), int(occurrence or 0))


def record_key(rec: dict) -> tuple:
    meta = rec.get("metadata") if isinstance(rec.get("metadata"), dict) else {}
    return _key(rec.get("question_id"), rec.get("round_id"), meta.get("occurrence"), meta.get("line"))


def number_occurrences(items: list[Item]) -> list[Item]:
    """Give repeated (question_id, round) pairs occurrence numbers 1, 2, ... in file order."""
    seen: dict[tuple, int] = {}
    for it in items:
        base = _key(it.question_id, it.round_id, 0, it.line)
        it.occurrence = seen.get(base, 0)
        seen[base] = it.occurrence + 1
    return items


def read_jsonl_questions(path: str, parse: Callable[[dict, int], Item | list[Item]]) -> list[Item]:
    """Read a JSON-lines question file; a line that is not a JSON object, or that ``parse``
    rejects (``KeyError``/``ValueError``/``TypeError``), becomes an error :class:`Item`."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: question file not found: {path}")
    items: list[Item] = []
    with open(path, encoding="utf-8") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                items.append(Item(_guess_id(raw), error=f"malformed question line {n}: {e.msg}", line=n))
                continue
            if not isinstance(obj, dict):
                items.append(Item(None, error=f"malformed question line {n}: not a JSON object", line=n))
                continue
            try:
                out = parse(obj, n)
            except (KeyError, ValueError, TypeError) as e:
                reason = f"missing field {e}" if isinstance(e, KeyError) else str(e)
                items.append(Item(obj.get("question_id"), error=f"malformed question line {n}: {reason}", line=n))
                continue
            items.extend(out if isinstance(out, list) else [out])
    return number_occurrences(items)


def _guess_id(raw: str):
    import re

    m = re.search(r'"question_id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)', raw)
    if not m:
        return None
    try:
        return json.loads(m.group(1))
    except json.JSONDecodeError:
        return None


def get_chunk(items: Sequence, num_chunks: int, chunk_idx: int) -> list:
    """Chunk ``chunk_idx`` of ``num_chunks`` near-equal contiguous chunks (sizes differ by ≤ 1)."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise SystemExit(f"error: need 0 <= --chunk-idx < --num-chunks, got {chunk_idx} / {num_chunks}")
    q, r = divmod(len(items), num_chunks)
    start = chunk_idx * q + min(chunk_idx, r)
    return list(items[start:start + q + (chunk_idx < r)])


# ----------------------------------------------------------------------------- answer files


def read_answers(path: str, repair: bool = False) -> list[dict]:
    """The records of an answers file. A torn tail (a partial line after the last newline, or a
    last line that is not JSON) is ignored, and cut off the file when ``repair`` (a whole record
    that only lacks its newline is kept). Bad lines elsewhere are an error."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    good_end = len(data) if data.endswith(b"\n") or not data else len(data) - len(lines[-1])
    complete = lines[:-1]  # the element after the last newline is b"" or a torn fragment
    records: list[dict] = []
    offset = 0
    for i, ln in enumerate(complete):
        start, offset = offset, offset + len(ln) + 1
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if all(not x.strip() for x in complete[i + 1:]):
                good_end = start  # torn last line (a crash between write and newline)
                break
            raise SystemExit(f"error: {path}:{i + 1}: corrupt answer line ({e}); fix or delete the file") from None
        records.append(rec)
    else:
        tail = lines[-1]
        if tail.strip():  # no final newline: keep the line if it is a whole record
            try:
                rec = json.loads(tail)
            except ValueError:
                rec = None
            if isinstance(rec, dict):
                records.append(rec)
                if repair:
                    with open(path, "ab") as fh:
                        fh.write(b"\n")
                        fh.flush()
                        os.fsync(fh.fileno())
                return records
    if repair and good_end < len(data):
        print(f"[resume] {path}: removed a torn last line ({len(data) - good_end} bytes)", file=sys.stderr)
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return records


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path)


def dumps(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False) + "\n"


class AnswerWriter:
    """Appends answer lines, each flushed and fsync'd before the next question is asked."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.fh = open(path, "a", encoding="utf-8")
        self.written = 0
        fault = os.environ.get(FAULT_ENV)
        self.fault_after = int(fault) if fault else None

    def write(self, rec: dict) -> None:
        line = dumps(rec)
        if self.fault_after is not None and self.written >= self.fault_after:
            self.fh.write(line[: len(line) // 2])  # a kill in mid-write
            self.fh.flush()
            os.fsync(self.fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        self.fh.write(line)
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.written += 1

    def close(self) -> None:
        self.fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def answers_stem(answers_file: str) -> str:
    """``dir/merge.jsonl`` → ``dir/merge`` (the prefix of the config and part files)."""
    return answers_file[:-6] if answers_file.endswith(".jsonl") else os.path.splitext(answers_file)[0]


def part_files(answers_file: str) -> list[str]:
    import glob

    stem = answers_stem(answers_file)
    return sorted(glob.glob(glob.escape(stem) + ".part-*-of-*.jsonl"))


def order_records(records: Iterable[dict], items: Sequence[Item]) -> list[dict]:
    """One record per key (a real answer beats an error entry, later beats earlier), in the
    order of ``items``; records of questions not in ``items`` follow in their file order."""
    best: dict[tuple, dict] = {}
    order: list[tuple] = []
    for rec in records:
        k = record_key(rec)
        if k not in best:
            order.append(k)
            best[k] = rec
        elif "error" in best[k] or "error" not in rec:
            best[k] = rec
    pos = {it.key: i for i, it in enumerate(items)}
    known = sorted((k for k in order if k in pos), key=pos.__getitem__)
    return [best[k] for k in known] + [best[k] for k in order if k not in pos]


def consolidate(answers_file: str, items: Sequence[Item], drop_errors: bool = False) -> list[dict]:
    """Repair the answers file, fold any part files of an earlier data-parallel run into it (in
    question order) and optionally drop error entries. Returns the resulting records."""
    records = read_answers(answers_file, repair=True)
    parts = part_files(answers_file)
    for p in parts:
        records += read_answers(p)
    n_before = len(records)
    if drop_errors:
        records = [r for r in records if "error" not in r]
    ordered = order_records(records, items)
    if parts or len(ordered) != n_before or [id(r) for r in ordered] != [id(r) for r in records]:
        write_atomic(answers_file, "".join(dumps(r) for r in ordered))
    for p in parts:
        os.remove(p)
    return ordered


# ----------------------------------------------------------------------------- run config


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def run_config(args, driver: str, model_name: str, compressor, prompt_options: dict, world_size: int) -> dict:
    return {
        "driver": driver,
        "model": model_name,
        "model_path": os.path.abspath(args.model_path),
        "model_base": args.model_base,
        "compression": compression_config(compressor),
        "generation": {
            "conv_mode": args.conv_mode, "temperature": args.temperature, "top_p": args.top_p,
            "num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
        },
        "prompt_options": prompt_options,
        "question_file": os.path.abspath(args.question_file),
        "image_folder": os.path.abspath(args.image_folder) if args.image_folder else None,
        "batch_size": args.batch_size,
        "world_size": world_size,
    }


def config_paths(answers_file: str) -> tuple[str, str]:
    """``(<stem>.config.json, <answers dir>/config.json)``."""
    return answers_stem(answers_file) + ".config.json", os.path.join(
        os.path.dirname(os.path.abspath(answers_file)), "config.json")


def _load_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
        return obj if isinstance(obj, dict) else None
    except (OSError, ValueError):
        return None


def check_and_write_config(args, cfg: dict, has_answers: bool) -> None:
    """Refuse to resume answers made with different settings; write both config files."""
    stem_cfg, dir_cfg = config_paths(args.answers_file)
    old = _load_json(stem_cfg)
    if has_answers and old is not None:
        diff = [k for k in _RESUME_KEYS if old.get(k) != cfg.get(k)]
        if diff:
            detail = "; ".join(f"{k}: {json.dumps(old.get(k))} -> {json.dumps(cfg.get(k))}" for k in diff)
            raise SystemExit(
                f"error: {args.answers_file} holds answers made with other settings ({detail}). "
                "Use another --answers-file, or --overwrite to start afresh.")
    full = {**cfg, "num_chunks": args.num_chunks, "chunk_idx": args.chunk_idx,
            "answers_file": os.path.abspath(args.answers_file), "created": _now()}
    write_atomic(stem_cfg, json.dumps(full, indent=2, ensure_ascii=False) + "\n")
    shared = {k: v for k, v in cfg.items() if k not in ("batch_size", "world_size")}
    old_dir = _load_json(dir_cfg)
    if old_dir is not None and {k: v for k, v in old_dir.items() if k != "created"} == shared:
        return
    if old_dir is not None and any(old_dir.get(k) != shared.get(k) for k in ("model", "compression")):
        print(f"warning: {dir_cfg} described another run ({old_dir.get('model')}, "
              f"{json.dumps(old_dir.get('compression'))}); overwriting it — keep one run per folder",
              file=sys.stderr)
    write_atomic(dir_cfg, json.dumps({**shared, "created": _now()}, indent=2, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- processes


class _Dist:
    """This process's place in a torchrun / accelerate launch (or a plain single process)."""

    def __init__(self):
        self.state = None
        self.rank, self.world, self.local_rank = 0, 1, 0
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch
            from accelerate import PartialState

            self.state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world = self.state.process_index, self.state.num_processes
            self.local_rank = self.state.local_process_index

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def share(self, items: list) -> list:
        if self.state is None:
            return items
        with self.state.split_between_processes(items) as mine:
            return list(mine)

    def close(self) -> None:
        if self.state is not None:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _device(args, dist: _Dist) -> str:
    import torch

    dev = args.device
    if dev is None:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda" and dist.world > 1:
        dev = f"cuda:{dist.local_rank}"
    return dev


# ----------------------------------------------------------------------------- generation


class Generator:
    """Model, tokenizer and prompt building for one run; ``answer(items)`` → answer records."""

    def __init__(self, args, model_name: str, compressor, device: str):
        from llava.model.builder import load_pretrained_model

        self.args, self.model_name, self.device = args, model_name, device
        self.tokenizer, self.model, self.image_processor, _ = load_pretrained_model(
            args.model_path, args.model_base, model_name, device=device, compressor=compressor,
            attn_implementation=args.attn_implementation)
        self.compression = compression_config(self.model.compressor)
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.unk_token_id or 0)

    def load_image(self, item: Item):
        from llava.mm_utils import ImageLoadError, load_image, load_image_from_base64

        if item.image_b64:
            try:
                return load_image_from_base64(item.image)
            except ImageLoadError as e:
                raise ImageLoadError(f"question {item.question_id}: {e}") from e
        return load_image(os.path.join(self.args.image_folder, item.image))

    def answer(self, items: list[Item]) -> list[dict]:
        """Records for ``items`` in order: errors for items that fail, answers for the rest."""
        from llava.mm_utils import ImageLoadError

        out: dict[int, dict] = {}
        ready: list[tuple[int, Any]] = []
        for i, it in enumerate(items):
            if it.error is not None:
                out[i] = self.error_record(it, it.error)
                continue
            image = None
            if it.image is not None:
                try:
                    image = self.load_image(it)
                except (ImageLoadError, OSError, ValueError) as e:
                    out[i] = self.error_record(it, str(e))
                    continue
            ready.append((i, image))
        if ready:
            try:
                results = self._generate([items[i] for i, _ in ready], [im for _, im in ready])
                self._failures = 0
            except Exception as e:  # one bad question must not stop a 10k-question run ...
                if _is_fatal(e):
                    raise
                if len(ready) > 1:  # ... so find it: answer the batch one by one
                    results = [self._generate_one(items[i], im) for i, im in ready]
                else:
                    results = [self._failed(e)]
            for (i, _), res in zip(ready, results):
                if isinstance(res, Exception):
                    out[i] = self.error_record(items[i], f"generation failed: {type(res).__name__}: {res}")
                else:
                    out[i] = self.answer_record(items[i], *res)
        return [out[i] for i in range(len(items))]

    _failures = 0
    MAX_CONSECUTIVE_FAILURES = 3

    def _generate_one(self, item: Item, image):
        try:
            res = self._generate([item], [image])[0]
            self._failures = 0
            return res
        except Exception as e:
            if _is_fatal(e):
                raise
            return self._failed(e)

    def _failed(self, e: Exception) -> Exception:
        """Count a failed question; several in a row mean a broken set-up, not a bad question."""
        self._failures += 1
        if self._failures >= self.MAX_CONSECUTIVE_FAILURES:
            raise RuntimeError(f"{self._failures} questions in a row failed to generate; last error: {e}") from e
        return e

    def _generate(self, items: list[Item], images: list) -> list[tuple[str, dict | None]]:
        """Generate for ``items``; ``images[b]`` is item b's PIL image or None (text only)."""
        from llava.eval.generation import generate_answers

        a = self.args
        answers = generate_answers(
            self.model, self.tokenizer, self.image_processor, [it.prompt for it in items],
            [[im] if im is not None else [] for im in images], conv_mode=a.conv_mode,
            max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p, num_beams=a.num_beams,
            pad_id=self.pad_id)
        return [(ans.text, ans.images[0] if ans.images else None) for ans in answers]

    def _base(self, item: Item) -> dict:
        rec = {"question_id": item.question_id}
        if item.fields or item.round_id:
            rec["round_id"] = item.round_id
        rec.update(item.fields)
        return rec

    def _meta(self, item: Item) -> dict:
        meta: dict[str, Any] = {}
        if item.occurrence:
            meta["occurrence"] = item.occurrence
        if item.question_id is None and item.line is not None:
            meta["line"] = item.line
        return meta

    def answer_record(self, item: Item, text: str, info: dict | None) -> dict:
        meta = self._meta(item)
        if info is None:
            meta.update(visual_tokens=0, visual_tokens_uncompressed=0)
        else:
            meta.update(visual_tokens=info["tokens"], visual_tokens_uncompressed=info["tokens_uncompressed"],
                        grid=info["grid"], thumbnail_kept=info["thumbnail_kept"], crop_kept=info["crop_kept"])
            if "budgets" in info:
                meta["budgets"] = info["budgets"]
        meta["compression"] = self.compression
        return {**self._base(item), "prompt": item.prompt, "text": text, "answer_id": shortuuid.uuid(),
                "model_id": self.model_name, "metadata": meta}

    def error_record(self, item: Item, reason: str) -> dict:
        return error_record(item, reason, self.model_name, self._base(item), self._meta(item))


def error_record(item: Item, reason: str, model_name: str, base: dict | None = None, meta: dict | None = None) -> dict:
    base = base if base is not None else {"question_id": item.question_id}
    meta = dict(meta or {})
    meta["error"] = reason
    return {**base, "prompt": item.prompt, "text": "", "error": reason, "answer_id": shortuuid.uuid(),
            "model_id": model_name, "metadata": meta}


def _is_fatal(e: BaseException) -> bool:
    import torch

    return isinstance(e, (MemoryError, torch.OutOfMemoryError, SystemExit))


def _batches(items: list, size: int):
    for i in range(0, len(items), max(1, size)):
        yield items[i:i + size]


def run(args, items: list[Item], *, driver: str, prompt_options: dict | None = None) -> dict:
    """Answer ``items`` (already in question-file order) into ``args.answers_file``.

    Returns a summary dict (``total``, ``answered_now``, ``skipped``, ``errors``) on every rank;
    the counts of rank 0 cover the whole (chunk of the) question file.
    """
    from llava.mm_utils import get_model_name_from_path

    if args.batch_size < 1:
        raise SystemExit("error: --batch-size must be >= 1")
    compressor = compressor_from_args(args)
    model_name = args.model_name or get_model_name_from_path(args.model_path)
    items = get_chunk(items, args.num_chunks, args.chunk_idx)
    dist = _Dist()
    cfg = run_config(args, driver, model_name, compressor, prompt_options or {}, dist.world)
    answers_file = args.answers_file
    if dist.is_main:
        os.makedirs(os.path.dirname(os.path.abspath(answers_file)), exist_ok=True)
        if args.overwrite:
            for p in [answers_file, *part_files(answers_file)]:
                if os.path.exists(p):
                    os.remove(p)
        has_answers = bool(os.path.exists(answers_file) and os.path.getsize(answers_file)) or bool(part_files(answers_file))
        check_and_write_config(args, cfg, has_answers)
        consolidate(answers_file, items, drop_errors=args.retry_errors)
    dist.barrier()
    done = {record_key(r) for r in read_answers(answers_file)}
    todo = [it for it in items if it.key not in done]
    mine = dist.share(todo)
    out_path = answers_file if dist.world == 1 else f"{answers_stem(answers_file)}.part-{dist.rank}-of-{dist.world}.jsonl"

    n_new = n_err = 0
    if mine:
        from tqdm import tqdm

        gen = Generator(args, model_name, compressor, _device(args, dist))
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
        summary["errors"] = sum("error" in r for r in mine_final)
        summary["answers"] = len(mine_final)
        failed = summary["errors"]
        print(f"[{driver}] {len(items)} questions: {len(mine_final) - failed} answered, {failed} failed "
              f"({len(todo)} done in this run, {summary['skipped']} earlier) -> {answers_file}", flush=True)
    dist.close()
    return summary


def add_text_suffix(text: str, suffix: str) -> str:
    """Append ``suffix`` unless the text already ends with it."""
    return text if text.rstrip().endswith(suffix.strip()) else text + suffix


__all__ = [
    "AnswerWriter", "Generator", "Item", "add_text_suffix", "build_parser", "check_and_write_config",
    "consolidate", "error_record", "get_chunk", "number_occurrences", "order_records", "read_answers",
    "read_jsonl_questions", "record_key", "run",
]
