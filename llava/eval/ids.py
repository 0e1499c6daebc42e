"""Question ids: one canonical form for matching answers to questions."""

from __future__ import annotations

from typing import Any


def qid_key(qid: Any) -> str:
    """Canonical string form of a question id: ``3``, ``3.0`` and ``"3"`` compare equal and
    surrounding whitespace is ignored; other ids compare as their ``str``."""
    if isinstance(qid, float) and qid.is_integer():
        qid = int(qid)
    return str(qid).strip()


__all__ = ["qid_key"]
