"""The documents of the local tasks: our drivers' question files, read from disk.

The data root is ``$LLAVA_EVAL_DATA`` (default ``./playground/data/eval``, the scripts' ``DATA``),
laid out as in ``playground/data/eval/README.md``. Each task's YAML loads a one-line placeholder
file (lmms-eval needs a ``datasets`` source) and names one of the ``*_docs`` functions below as
``process_docs``; that function reads the benchmark's question file with the loader of the
matching driver (:mod:`llava.eval.model_vqa_loader`, ``model_vqa_science``,
``model_vqa_mmbench``), so the prompts are exactly the scripts' prompts.

A document: ``qid`` (the question id as JSON, so its type survives), ``position`` (its place in
the question file), ``message`` (the user message asked, without the image placeholder),
``prompt`` (what the driver writes into the answers file's ``prompt``), ``image`` (an undecoded
``datasets.Image``: a file path, or MMBench's decoded base64; ``None`` for text-only ScienceQA
questions; opened by :func:`doc_to_visual` as the drivers open images), ``image_file`` (for the sample log), and, for MMBench, ``round_id``/``options``/
``option_char``. A question file that is missing, malformed, or names images that do not exist is
an error before anything is generated.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

DATA_ENV = "LLAVA_EVAL_DATA"
DEFAULT_DATA = os.path.join(".", "playground", "data", "eval")
README = "playground/data/eval/README.md"


class LocalDataError(FileNotFoundError):
    """A local benchmark file is missing or unusable (the message names it)."""


def data_root() -> str:
    return os.environ.get(DATA_ENV) or DEFAULT_DATA


def data_path(*parts: str) -> str:
    return os.path.join(data_root(), *parts)


def require(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise LocalDataError(f"{what} not found: {path} (data root ${DATA_ENV}={data_root()}; see {README})")
    return path


def _questions(items: list, question_file: str) -> list:
    """The driver's items, refusing the malformed questions it would record as errors."""
    bad = [it for it in items if it.error is not None]
    if bad:
        first = "; ".join(f"{it.question_id!r}: {it.error}" for it in bad[:3])
        raise ValueError(f"{question_file}: {len(bad)} malformed question(s) (first: {first})")
    return items


def _dataset(rows: list[dict[str, Any]], extra: dict | None = None):
    from datasets import Dataset, Features, Image, Sequence, Value

    # decode=False: the image is opened by doc_to_visual exactly as the drivers open it (datasets'
    # own decoding would apply EXIF rotations that LLaVA's loader does not).
    features = {"qid": Value("string"), "position": Value("int64"), "message": Value("string"),
                "prompt": Value("string"), "image": Image(decode=False), "image_file": Value("string")}
    if extra:
        features.update({k: Sequence(Value("string")) if v == "strings" else Value(v) for k, v in extra.items()})
    return Dataset.from_list(rows, features=Features(features))


def _file_docs(items: list, image_folder: str) -> list[dict[str, Any]]:
    rows, missing = [], []
    for pos, it in enumerate(items):
        path = os.path.abspath(os.path.join(image_folder, it.image)) if it.image is not None else None
        if path is not None and not os.path.isfile(path):
            missing.append(path)
        rows.append({"qid": json.dumps(it.question_id), "position": pos, "message": it.message, "prompt": it.prompt,
                     "image": {"path": path, "bytes": None} if path else None, "image_file": it.image})
    if missing:
        raise LocalDataError(f"{len(missing)} image(s) not found (first: {', '.join(missing[:3])}); "
                             f"data root ${DATA_ENV}={data_root()}, see {README}")
    return rows


def short_answer_docs(question_file: str, image_folder: str):
    """Documents of a ``model_vqa_loader``-style question file (``question_id, image, text``)."""
    from llava.eval.model_vqa_loader import load_questions

    require(question_file, "question file")
    require(image_folder, "image folder")
    return _dataset(_file_docs(_questions(load_questions(question_file), question_file), image_folder))


def science_docs(question_file: str, image_folder: str):
    """ScienceQA documents (``model_vqa_science --single-pred-prompt``)."""
    from llava.eval.model_vqa_science import load_questions

    require(question_file, "question file")
    items = _questions(load_questions(question_file, single_pred_prompt=True), question_file)
    if any(it.image is not None for it in items):
        require(image_folder, "image folder")
    return _dataset(_file_docs(items, image_folder))


def mmbench_docs(tsv: str, lang: str):
    """MMBench(-CN) documents (``model_vqa_mmbench --single-pred-prompt --lang LANG``)."""
    from llava.eval.model_vqa_mmbench import load_questions

    require(tsv, "MMBench TSV")
    items = _questions(load_questions(tsv, single_pred_prompt=True, lang=lang), tsv)
    rows = []
    for pos, it in enumerate(items):
        try:
            data = base64.b64decode(it.image)  # as llava.mm_utils.load_image_from_base64
        except (binascii.Error, ValueError):
            raise ValueError(f"{tsv}: row {it.line} (index {it.question_id}): the image is not base64") from None
        rows.append({"qid": json.dumps(it.question_id), "position": pos, "message": it.message, "prompt": it.prompt,
                     "image": {"path": None, "bytes": data}, "image_file": f"{os.path.basename(tsv)}#{it.question_id}",
                     "round_id": it.round_id, **it.fields})
    return _dataset(rows, {"round_id": "int64", "options": "strings", "option_char": "strings"})


# ----------------------------------------------------------------------------- one per task
# (``process_docs`` of the YAMLs: the placeholder dataset they receive is ignored)

def vqav2_docs(_placeholder):
    return short_answer_docs(data_path("vqav2", "llava_vqav2_mscoco_test-dev2015.jsonl"), data_path("vqav2", "test2015"))


def gqa_docs(_placeholder):
    return short_answer_docs(data_path("gqa", "llava_gqa_testdev_balanced.jsonl"), data_path("gqa", "data", "images"))


def vizwiz_docs(_placeholder):
    return short_answer_docs(data_path("vizwiz", "llava_test.jsonl"), data_path("vizwiz", "test"))


def sqa_docs(_placeholder):
    return science_docs(data_path("scienceqa", "llava_test_CQM-A.json"), data_path("scienceqa", "images", "test"))


def textvqa_docs(_placeholder):
    return short_answer_docs(data_path("textvqa", "llava_textvqa_val_v051_ocr.jsonl"), data_path("textvqa", "train_images"))


def pope_docs(_placeholder):
    return short_answer_docs(data_path("pope", "llava_pope_test.jsonl"), data_path("pope", "val2014"))


def mme_docs(_placeholder):
    return short_answer_docs(data_path("MME", "llava_mme.jsonl"), data_path("MME", "MME_Benchmark_release_version"))


def mmbench_docs_en(_placeholder):
    return mmbench_docs(data_path("mmbench", "mmbench_dev_20230712.tsv"), "en")


def mmbench_docs_cn(_placeholder):
    return mmbench_docs(data_path("mmbench", "mmbench_dev_cn_20231003.tsv"), "cn")


def mmvet_docs(_placeholder):
    return short_answer_docs(data_path("mm-vet", "llava-mm-vet.jsonl"), data_path("mm-vet", "images"))


# ----------------------------------------------------------------------------- prompts


def doc_to_text(doc: dict) -> str:
    return doc["message"]


def doc_to_target(doc: dict) -> str:
    """Nothing: the ground truth stays with the scorers (see :mod:`llava.lmms.tasks.scoring`)."""
    return ""


def doc_to_visual(doc: dict) -> list:
    """The document's image opened as the drivers open it (:func:`llava.mm_utils.load_image`)."""
    from llava.mm_utils import load_image

    image = doc["image"]
    if image is None:
        return []
    return [load_image(image["bytes"] if image.get("bytes") else image["path"])]
