"""A checkpoint's identity, recorded with every run so that answers of two models never mix.

The fingerprint is cheap (it reads about 2 MiB per weight file, whatever the model size) and
content-based, so a copied or moved checkpoint keeps its identity while another one — even
with the same folder name and architecture — gets another:

* the checkpoint's JSON files (``config.json``, the weight index, tokenizer and generation
  settings) and ``tokenizer.model``, in full; the same for the vision tower's folder when
  ``mm_vision_tower`` names a local one;
* every weight file's size, plus for ``*.safetensors`` its JSON header (names, dtypes, shapes,
  offsets) and for all weight files the first and last MiB of data.

The weights themselves are not hashed in full (that would read gigabytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

from .errors import RunError

SAMPLE_BYTES = 1 << 20
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
SMALL_FILES = ("tokenizer.model",)


def _small_files(folder: str) -> list[str]:
    names = sorted(os.listdir(folder))
    return [n for n in names if (n.endswith(".json") or n in SMALL_FILES) and os.path.isfile(os.path.join(folder, n))]


def _hash_weight_file(h, path: str) -> None:
    size = os.path.getsize(path)
    h.update(f"size {size}\n".encode())
    with open(path, "rb") as fh:
        data_start = 0
        if path.endswith(".safetensors") and size >= 8:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n <= size - 8:
                h.update(fh.read(n))  # the header: tensor names, dtypes, shapes, offsets
                data_start = 8 + n
        fh.seek(data_start)
        h.update(fh.read(SAMPLE_BYTES))
        fh.seek(max(data_start, size - SAMPLE_BYTES))
        h.update(fh.read(SAMPLE_BYTES))


def _vision_folder(root: str) -> str | None:
    try:
        with open(os.path.join(root, "config.json"), encoding="utf-8") as fh:
            tower = json.load(fh).get("mm_vision_tower")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(tower, str):
        return None
    for cand in (os.path.join(root, tower), os.path.expanduser(tower)):
        if os.path.isdir(cand) and os.path.realpath(cand) != root:
            return os.path.realpath(cand)
    return None


def checkpoint_identity(model_path: str) -> dict:
    """``{"path": <resolved folder>, "fingerprint": "sha256:..."}`` of a local checkpoint."""
    root = os.path.realpath(os.path.expanduser(model_path))
    if not os.path.isdir(root):
        raise RunError(f"model folder not found: {model_path}")
    if not os.path.isfile(os.path.join(root, "config.json")):
        raise RunError(f"{os.path.join(model_path, 'config.json')} is missing")
    h = hashlib.sha256()
    folders = [("", root)]
    vision = _vision_folder(root)
    if vision is not None:
        folders.append(("vision/", vision))
    for label, folder in folders:
        for name in _small_files(folder):
            with open(os.path.join(folder, name), "rb") as fh:
                data = fh.read()
            h.update(f"{label}{name} {len(data)}\n".encode())
            h.update(data)
    weights = sorted(n for n in os.listdir(root) if n.endswith(WEIGHT_SUFFIXES) and os.path.isfile(os.path.join(root, n)))
    for name in weights:
        h.update(f"weights {name}\n".encode())
        _hash_weight_file(h, os.path.join(root, name))
    return {"path": root, "fingerprint": "sha256:" + h.hexdigest()}


__all__ = ["checkpoint_identity"]
