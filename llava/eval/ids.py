"""The one canonical form of a question id, shared by every scorer and converter.

Question files and answer files write ids as JSON numbers or strings (``34602``, ``"34602"``,
``"artwork/10002.jpg"``), and a float may sneak in through pandas (``34602.0``). Two ids name the
same question when their canonical forms are equal.
"""

from __future__ import annotations

from typing import Any


def qid_key(qid: Any) -> str:
    """Canonical string form of a question id: ``1 == "1" == 1.0 == " 1 "``; ``None`` -> ``"None"``."""
    if isinstance(qid, float) and qid.is_integer():
        qid = int(qid)
    return str(qid).strip()
