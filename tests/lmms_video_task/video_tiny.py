"""The tiny video task's document functions (see video_tiny.yaml)."""

from __future__ import annotations

import os

MEDIA_ENV = "LLAVA_TINY_VIDEO_MEDIA"


def _media(name: str) -> str:
    root = os.environ.get(MEDIA_ENV)
    if not root:
        raise FileNotFoundError(f"set ${MEDIA_ENV} to the folder of the tiny video task's files")
    return os.path.join(root, name)


def doc_to_visual(doc: dict) -> list:
    """The document's picture (a PIL image), if any, then its video (a path)."""
    from PIL import Image

    out = []
    if doc.get("image"):
        with Image.open(_media(doc["image"])) as im:
            out.append(im.convert("RGB"))
    out.append(_media(doc["video"]))
    return out


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return doc["question"]


def process_results(doc: dict, results: list[str]) -> dict:
    return {"video_accuracy": float(results[0].strip().lower() == doc["answer"])}
