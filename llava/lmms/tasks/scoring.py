"""Scoring the local tasks with our scorers (:mod:`llava.eval`), number for number.

``process_results`` turns each answer into the line our drivers would have written
(``question_id`` with its original type, ``prompt``, ``text``; MMBench also ``round_id``,
``options``, ``option_char``). The aggregation of a task writes those lines, in question-file
order, to ``<--output_path>/submissions/<task>-<time>-answers.jsonl`` — an answers file our
scorers and converters read as they read the scripts' ``merge.jsonl`` — and runs the benchmark's
scorer on it with the scripts' ground-truth files, so the metric is the scorer's headline:

=========  ==============================  ==========================================
task       metric                          scorer
=========  ==============================  ==========================================
GQA        gqa_accuracy                    eval_gqa (exact match after LLaVA's conversion)
SQA-IMG    sqa_img_accuracy                eval_science_qa (IMG-Accuracy)
TextVQA    textvqa_accuracy                eval_textvqa (VQA soft accuracy)
POPE       pope_f1                         eval_pope (mean F1 of the splits)
MME        mme_perception                  eval_mme (perception score)
MMBench    mmbench_circular_accuracy       eval_mmbench (CircularEval)
VQAv2      submission                      convert_vqav2_for_submission (EvalAI upload file)
VizWiz     submission                      convert_vizwiz_for_submission (EvalAI upload file)
MM-Vet     submission                      convert_mmvet_for_eval (the GPT grader's input)
=========  ==============================  ==========================================

The server/grader-scored tasks write their upload file next to the answers and report no
number. A run over part of a benchmark (``--limit``) is scored as the scorers'
``--allow-partial`` does and logged as partial; lmms-eval's ``n-samples`` in the results file
shows how many questions were asked.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from loguru import logger

from .docs import data_path, require

# ----------------------------------------------------------------------------- per sample


def answer_line(doc: dict, results: list[str]) -> dict[str, Any]:
    """The answers-file line of one document (plus ``position``, dropped when written)."""
    line = {"position": int(doc["position"]), "question_id": json.loads(doc["qid"]), "prompt": doc["prompt"],
            "text": results[0]}
    if doc.get("options") is not None:
        line.update(round_id=int(doc["round_id"]), options=list(doc["options"]), option_char=list(doc["option_char"]))
    return line


def _result(metric: str):
    def process_results(doc: dict, results: list[str]) -> dict[str, Any]:
        return {metric: answer_line(doc, results)}

    process_results.__name__ = f"process_results_{metric}"
    return process_results


gqa_process_results = _result("gqa_accuracy")
sqa_process_results = _result("sqa_img_accuracy")
textvqa_process_results = _result("textvqa_accuracy")
pope_process_results = _result("pope_f1")
mme_process_results = _result("mme_perception")
mmbench_process_results = _result("mmbench_circular_accuracy")
submission_process_results = _result("submission")

# ----------------------------------------------------------------------------- answers file


def submissions_dir(args) -> str:
    """``<--output_path>/submissions`` (lmms-eval's place for such files), else ``./submissions``."""
    base = getattr(args, "output_path", None) if args is not None else None
    path = os.path.join(base, "submissions") if base else "submissions"
    os.makedirs(path, exist_ok=True)
    return os.path.abspath(path)


def write_answers(task: str, lines: list[dict], args) -> tuple[str, str]:
    """Write the answers file; returns ``(its path, the prefix for companion files)``."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    prefix = os.path.join(submissions_dir(args), f"{task}-{stamp}")
    path = prefix + "-answers.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for line in sorted(lines, key=lambda r: r["position"]):
            fh.write(json.dumps({k: v for k, v in line.items() if k != "position"}, ensure_ascii=False) + "\n")
    logger.info(f"{task}: answers written to {path}")
    return path, prefix


def _note_coverage(task: str, coverage) -> None:
    if coverage is not None and not coverage.complete:
        logger.warning(f"{task}: scored as partial — {coverage.line()}")


# ----------------------------------------------------------------------------- aggregations


def gqa_aggregate(results: list[dict], args=None) -> float:
    from llava.eval import eval_gqa

    path, _ = write_answers("gqa_local", results, args)
    questions = eval_gqa.load_questions(require(data_path("gqa", "data", "testdev_balanced_questions.json"),
                                                "GQA ground truth"))
    entries, coverage = eval_gqa.read_predictions(path, questions, allow_partial=True)
    _note_coverage("gqa_local", coverage)
    return eval_gqa.evaluate(questions, entries)["accuracy"]


def sqa_aggregate(results: list[dict], args=None) -> float:
    from llava.eval import eval_science_qa

    path, _ = write_answers("sqa_local", results, args)
    out = eval_science_qa.evaluate(require(data_path("scienceqa"), "ScienceQA folder"), path, allow_partial=True)
    _note_coverage("sqa_local", out["coverage"])
    return out["img_accuracy"]


def textvqa_aggregate(results: list[dict], args=None) -> float:
    from llava.eval import eval_textvqa

    path, _ = write_answers("textvqa_local", results, args)
    out = eval_textvqa.evaluate(require(data_path("textvqa", "TextVQA_0.5.1_val.json"), "TextVQA annotations"), path,
                                allow_partial=True)
    _note_coverage("textvqa_local", out["coverage"])
    return out["accuracy"]


def pope_aggregate(results: list[dict], args=None) -> float:
    from llava.eval import eval_pope

    path, _ = write_answers("pope_local", results, args)
    out = eval_pope.evaluate(require(data_path("pope", "coco"), "POPE label folder"),
                             data_path("pope", "llava_pope_test.jsonl"), path, allow_partial=True)
    _note_coverage("pope_local", out["coverage"])
    return out["f1_mean"]


def mme_aggregate(results: list[dict], args=None) -> float:
    from llava.eval import eval_mme

    path, _ = write_answers("mme_local", results, args)
    out = eval_mme.evaluate(require(data_path("MME", "eval_tool", "Your_Results"), "MME ground truth"), path,
                            data_path("MME", "llava_mme.jsonl"), allow_partial=True)
    _note_coverage("mme_local", out["coverage"])
    return out["perception"]


def _mmbench(task: str, tsv: str, results: list[dict], args) -> float:
    from llava.eval import eval_mmbench

    path, _ = write_answers(task, results, args)
    df = eval_mmbench.load_tsv(require(tsv, "MMBench TSV"))
    usable, coverage = eval_mmbench.read_answers(df, path, allow_partial=True)
    _note_coverage(task, coverage)
    return eval_mmbench.evaluate(df, usable)["circular_accuracy"]


def mmbench_aggregate(results: list[dict], args=None) -> float:
    return _mmbench("mmbench_local", data_path("mmbench", "mmbench_dev_20230712.tsv"), results, args)


def mmbench_cn_aggregate(results: list[dict], args=None) -> float:
    return _mmbench("mmbench_cn_local", data_path("mmbench", "mmbench_dev_cn_20231003.tsv"), results, args)


def _upload(task: str, prefix: str, payload: Any, what: str) -> None:
    out = f"{prefix}-{what}.json"
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2 if what == "mmvet-results" else None, ensure_ascii=False)
    logger.info(f"{task}: {what} written to {out}")


def vqav2_aggregate(results: list[dict], args=None) -> None:
    from llava.eval import convert_vqav2_for_submission as conv

    path, prefix = write_answers("vqav2_local", results, args)
    test = require(data_path("vqav2", conv.TEST_SPLIT), "VQAv2 test split file")
    entries = conv.convert(path, test, data_path("vqav2", "llava_vqav2_mscoco_test-dev2015.jsonl"), allow_partial=True)
    _upload("vqav2_local", prefix, entries, "upload")


def vizwiz_aggregate(results: list[dict], args=None) -> None:
    from llava.eval import convert_vizwiz_for_submission as conv

    path, prefix = write_answers("vizwiz_local", results, args)
    entries = conv.convert(data_path("vizwiz", "llava_test.jsonl"), path, allow_partial=True)
    _upload("vizwiz_local", prefix, entries, "upload")


def mmvet_aggregate(results: list[dict], args=None) -> None:
    from llava.eval import convert_mmvet_for_eval as conv

    path, prefix = write_answers("mmvet_local", results, args)
    ref = data_path("mm-vet", "mm-vet.json")
    out = conv.convert(path, ref if os.path.isfile(ref) else None, allow_partial=True)
    _upload("mmvet_local", prefix, out, "mmvet-results")
