"""Crash-safe answer files: every line fsync'd as written, a torn last line cut off on the next
start, whole-file rewrites atomic (and through symlinks, to their target), data-parallel part
files folded back in question order."""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Iterable, Sequence

from .errors import RunError
from .questions import Item, record_key


def read_answers(path: str, repair: bool = False) -> list[dict]:
    """The records of an answers file. A torn tail (a partial line after the last newline, or a
    last line that is not JSON) is ignored, and cut off the file when ``repair`` (a whole record
    that only lacks its newline is kept). Bad lines elsewhere are a :class:`RunError`."""
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
            raise RunError(f"{path}:{i + 1}: corrupt answer line ({e}); fix or delete the file") from None
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
    """Replace ``path``'s content with ``text`` atomically. A symlink stays a symlink (its
    target is replaced); if anything fails, the old content stays and no temporary is left."""
    target = os.path.realpath(path)
    tmp = f"{target}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(target)


def dumps(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False) + "\n"


class AnswerWriter:
    """Appends answer lines, each flushed and fsync'd before the next question is asked."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.fh = open(path, "a", encoding="utf-8")
        self.written = 0

    def write(self, rec: dict) -> None:
        self.fh.write(dumps(rec))
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


def part_path(answers_file: str, rank: int, world: int) -> str:
    """Where rank ``rank`` of a ``world``-process data-parallel run writes its answers."""
    return f"{answers_stem(answers_file)}.part-{rank}-of-{world}.jsonl"


def part_files(answers_file: str) -> list[str]:
    stem = answers_stem(answers_file)
    return sorted(glob.glob(glob.escape(stem) + ".part-*-of-*.jsonl"))


def read_all(answers_file: str) -> list[dict]:
    """The records of the answers file and of any part files of a data-parallel run (read only)."""
    records = read_answers(answers_file)
    for p in part_files(answers_file):
        records += read_answers(p)
    return records


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


def consolidate(answers_file: str, items: Sequence[Item]) -> list[dict]:
    """Repair the answers file, fold any part files of a data-parallel run into it and keep one
    record per question, in question order. Creates the file if missing (a chunk with no
    questions is an empty answers file). Returns the resulting records."""
    records = read_answers(answers_file, repair=True)
    parts = part_files(answers_file)
    for p in parts:
        records += read_answers(p)
    ordered = order_records(records, items)
    if parts or not os.path.exists(answers_file) or [id(r) for r in ordered] != [id(r) for r in records]:
        write_atomic(answers_file, "".join(dumps(r) for r in ordered))
    for p in parts:
        os.remove(p)
    return ordered


__all__ = [
    "AnswerWriter", "answers_stem", "consolidate", "dumps", "order_records", "part_files", "part_path",
    "read_all", "read_answers", "write_atomic",
]
