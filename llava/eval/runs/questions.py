"""Questions: what one generation request is (:class:`Item`), how it is keyed in the answers
file, reading question files, and sharding them into chunks."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llava.eval.ids import qid_key

from .errors import RunError


@dataclass
class Item:
    """One generation request.

    ``message`` is the user message asked (without the ``<image>`` placeholder; the image goes
    first). ``prompt`` is what the answer file's ``prompt`` field holds — what the original
    LLaVA driver writes there (default: ``message``). ``image`` is a path (joined to
    ``--image-folder``) or, with ``image_b64``, a base64 string; None means a text-only
    question. ``error`` marks a question that cannot be asked (it is written as an error
    entry). ``fields`` are extra top-level answer fields (MMBench rounds).
    """

    question_id: Any
    message: str = ""
    prompt: str | None = None
    image: str | None = None
    image_b64: bool = False
    round_id: int = 0
    fields: dict = field(default_factory=dict)
    error: str | None = None
    line: int | None = None  # 1-based position in the question file (for id-less errors)
    occurrence: int = 0

    def __post_init__(self) -> None:
        if self.prompt is None:
            self.prompt = self.message

    @property
    def key(self) -> tuple:
        return _key(self.question_id, self.round_id, self.occurrence, self.line)


def _key(question_id, round_id, occurrence, line) -> tuple:
    if question_id is None:
        return ("#line", int(line or 0), 0, 0)
    return ("id", qid_key(question_id), int(round_id or 0), int(occurrence or 0))


def record_key(rec: dict) -> tuple:
    """The key of an answer record (matches :attr:`Item.key` of its question)."""
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


def read_text(path: str) -> str:
    """A question file's text. A missing file, or bytes that are not UTF-8, are a
    :class:`RunError` naming the file and line."""
    if not os.path.isfile(path):
        raise RunError(f"question file not found: {path}")
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise RunError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at column {column}); "
                       "save the question file as UTF-8") from None


def read_jsonl_questions(path: str, parse: Callable[[dict, int], Item | list[Item]]) -> list[Item]:
    """Read a JSON-lines question file; a line that is not a JSON object, or that ``parse``
    rejects (``KeyError``/``ValueError``/``TypeError``), becomes an error :class:`Item`."""
    items: list[Item] = []
    for n, raw in enumerate(read_text(path).split("\n"), 1):
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
    m = re.search(r'"question_id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)', raw)
    if not m:
        return None
    try:
        return json.loads(m.group(1))
    except json.JSONDecodeError:
        return None


def get_chunk(items: Sequence, num_chunks: int, chunk_idx: int) -> list:
    """Chunk ``chunk_idx`` of ``num_chunks`` near-equal contiguous chunks (sizes differ by ≤ 1;
    with more chunks than items the last chunks are empty)."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise RunError(f"need 0 <= --chunk-idx < --num-chunks, got {chunk_idx} / {num_chunks}")
    q, r = divmod(len(items), num_chunks)
    start = chunk_idx * q + min(chunk_idx, r)
    return list(items[start:start + q + (chunk_idx < r)])


def questions_fingerprint(items: Sequence[Item]) -> str:
    """A digest of what is asked (keys, messages, images): equal for the same question file
    wherever it lies, different for another benchmark or split."""
    h = hashlib.sha256()
    for it in items:
        image = (it.image or "").encode()
        h.update(json.dumps([list(it.key), it.message, len(image)], ensure_ascii=False).encode())
        h.update(image)
    return "sha256:" + h.hexdigest()


def add_text_suffix(text: str, suffix: str) -> str:
    """Append ``suffix`` unless the text already ends with it."""
    return text if text.rstrip().endswith(suffix.strip()) else text + suffix


__all__ = [
    "Item", "add_text_suffix", "get_chunk", "number_occurrences", "questions_fingerprint", "read_jsonl_questions",
    "read_text", "record_key",
]
