"""MME scorer: LLaVA's ``convert_answer_to_mme.py`` followed by MME's ``eval_tool/calculation.py``.

Ground truth (``--gt-dir``), either layout:
  * ``MME_Benchmark_release_version/`` (what the converter reads): one folder per subtask with
    per-image ``<stem>.txt`` files of ``question<TAB>answer`` lines, next to the images or in
    ``questions_answers_YN/``;
  * ``eval_tool/Your_Results/`` (or ``eval_tool/``): one ``<subtask>.txt`` per subtask with
    ``image<TAB>question<TAB>answer`` lines.

Answers (``--result-file``): jsonl ``{"question_id": "<subtask>/.../<image>", "prompt", "text"}``,
two per image (two questions share an id).

As the originals: an answer's subtask is the id's first path part, its file ``<image stem>.txt``
(the image name up to its first ``.``), its question the ``prompt`` without "Answer the question
using a single word or phrase.", with " Please answer yes or no." appended when missing (with two
spaces when only that spelling is in the ground truth). Then, per subtask and in answer-file
order, ``calculation.py`` pairs **consecutive** answers as the two questions of one image: acc = %
answers right, acc+ = % pairs with both right, score = acc + acc+; an answer is read from its raw
first four characters, lower-cased (:func:`mme_yes_no`: "yes" if they contain ``yes``, else "no"
if they contain ``no``, else "other", which is wrong). Perception = sum over the ten perception
subtasks (max 2000), cognition over the four others (max 800).

Refused by default (``--lenient`` fixes each): a pair of consecutive answers of two different
images (``calculation.py`` would pair the wrong questions; lenient groups by image); an answer
with a tab or line break (it would break the converter's line format; lenient turns them into
spaces); an answer whose question is not in the ground truth (lenient also compares questions
ignoring case, spacing and the instruction suffixes, and takes a missing ``prompt`` from
``--question-file``: the n-th answer of an id gets the n-th question of that id).

``--write-results-dir DIR`` writes ``DIR/<subtask>.txt`` exactly as the converter does
(``<stem>.txt<TAB>question<TAB>answer<TAB>raw prediction`` per line, in the order scored), so
MME's own ``calculation.py --results_dir DIR`` prints the same scores. The last line printed is
``MME perception: XXXX.XX``.
"""

from __future__ import annotations

import argparse
import os

from llava.eval.answer_coverage import Tally, check_coverage, is_error_entry
from llava.eval.ids import qid_key
from llava.eval.scoring_utils import (
    ScorerInputError,
    add_scorer_args,
    finish,
    load_jsonl,
    require_dir,
    run_cli,
)

PERCEPTION = ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
              "artwork", "OCR"]
COGNITION = ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]
SHORT_ANSWER = "Answer the question using a single word or phrase."
YES_NO = "Please answer yes or no."
_SUFFIXES = (YES_NO.lower(), SHORT_ANSWER.lower())
_BREAKS = ("\t", "\n", "\r")

Key = tuple[str, str, str]  # (subtask, "<stem>.txt", question)


def mme_yes_no(text: str) -> str:
    """``calculation.py``'s reading of an answer: ``"yes"``, ``"no"`` or ``"other"`` (module doc)."""
    head = text.lower()[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def _qa_file(name: str) -> str:
    """The converter's per-image file name: the image name up to its first ``.``, plus ``.txt``."""
    return name.split("/")[-1].split(".")[0] + ".txt"


def _read_tsv(path: str, min_fields: int) -> list[list[str]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            parts = line.strip().split("\t")
            if len(parts) < min_fields:
                raise ScorerInputError(f"{path}:{lineno}: expected {min_fields} tab-separated fields")
            rows.append(parts)
    return rows


def load_ground_truth(gt_dir: str) -> dict[Key, str]:
    """``{(subtask, "<stem>.txt", question): answer}`` from either layout (module doc)."""
    require_dir(gt_dir, "MME ground-truth directory")
    for sub in ("Your_Results", os.path.join("eval_tool", "Your_Results")):
        if os.path.isdir(os.path.join(gt_dir, sub)):
            gt_dir = os.path.join(gt_dir, sub)
            break
    entries = sorted(os.listdir(gt_dir))
    gt: dict[Key, str] = {}
    txts = [e for e in entries if e.endswith(".txt") and os.path.isfile(os.path.join(gt_dir, e))]
    if txts:
        for name in txts:
            for image, question, answer, *_ in _read_tsv(os.path.join(gt_dir, name), 3):
                gt[(name[:-4], _qa_file(image), question)] = answer
        return gt
    for sub in entries:
        sub_dir = os.path.join(gt_dir, sub)
        if not os.path.isdir(sub_dir):
            continue
        qa_dir = os.path.join(sub_dir, "questions_answers_YN") if os.path.isdir(os.path.join(sub_dir, "images")) \
            else sub_dir
        if not os.path.isdir(qa_dir):
            raise ScorerInputError(f"{sub_dir}: has images/ but no questions_answers_YN/")
        for name in sorted(os.listdir(qa_dir)):
            if name.endswith(".txt"):
                for question, answer, *_ in _read_tsv(os.path.join(qa_dir, name), 2):
                    gt[(sub, name, question)] = answer
    if not gt:
        raise ScorerInputError(f"no MME ground-truth .txt files found under {gt_dir} (see playground/data/eval/README.md)")
    return gt


def answer_key(question_id: str, prompt: str, gt: dict) -> Key:
    """The converter's (subtask, file, question) for one answer."""
    category, file = question_id.split("/")[0], _qa_file(question_id)
    if SHORT_ANSWER in prompt:
        prompt = prompt.replace(SHORT_ANSWER, "").strip()
    if YES_NO not in prompt:
        prompt = prompt + " " + YES_NO
        if (category, file, prompt) not in gt:
            prompt = prompt.replace(" " + YES_NO, "  " + YES_NO)
    return category, file, prompt


def _norm_question(text: str) -> str:
    t = " ".join(str(text).replace("<image>", " ").split()).lower()
    changed = True
    while changed:
        changed = False
        for suf in _SUFFIXES:
            if t.endswith(suf):
                t, changed = t[: -len(suf)].strip(), True
    return t


class _LenientKeys:
    """``--lenient`` matching: questions compared normalised; prompts from the question file."""

    def __init__(self, gt: dict, question_file: str | None):
        self.index = {(c, f, _norm_question(q)): (c, f, q) for c, f, q in gt}
        self.questions: dict[str, list[str]] = {}
        if question_file:
            for q in load_jsonl(question_file, "question file"):
                self.questions.setdefault(qid_key(q.get("question_id")), []).append(str(q.get("text", "")))
        self.seen: dict[str, int] = {}

    def key(self, qid: str, prompt: str | None, gt: dict) -> Key:
        k = self.seen.get(qid, 0)
        self.seen[qid] = k + 1
        if not prompt:
            texts = self.questions.get(qid, [])
            prompt = texts[k] if k < len(texts) else ""
        exact = answer_key(qid, prompt, gt)
        if exact in gt:
            return exact
        return self.index.get((exact[0], exact[1], _norm_question(prompt)), exact)


def _pairs(rows: list[dict], category: str, result_file: str, lenient: bool) -> list[list[dict]]:
    """``calculation.py``'s chunks of two consecutive answers (grouped by image with ``lenient``)."""
    if lenient:
        by_image: dict[str, list[dict]] = {}
        for r in rows:
            by_image.setdefault(r["file"], []).append(r)
        rows = [r for group in by_image.values() for r in group]
    if len(rows) % 2:
        raise ScorerInputError(f"{result_file}: subtask '{category}' has {len(rows)} answers; calculation.py reads "
                               f"them in pairs (two questions per image)")
    pairs = [rows[i:i + 2] for i in range(0, len(rows), 2)]
    for a, b in pairs:
        if a["file"] != b["file"]:
            raise ScorerInputError(
                f"{result_file}: subtask '{category}': consecutive answers {a['id']!r} and {b['id']!r} are of two "
                f"images, but calculation.py scores consecutive answers as the two questions of one image; "
                f"--lenient groups the answers by image")
    return pairs


def evaluate(gt_dir: str, result_file: str, question_file: str | None = None, *, allow_partial: bool = False,
             lenient: bool = False) -> dict:
    gt = load_ground_truth(gt_dir)
    tally = Tally(gt, show=lambda k: f"{k[0]}/{k[1][:-4]}: {k[2]!r}")
    loose = _LenientKeys(gt, question_file) if lenient else None
    rows: dict[str, list[dict]] = {}
    broken = []
    for r in load_jsonl(result_file, "result file"):
        qid = r.get("question_id")
        if is_error_entry(r):
            tally.add(None, error=True, shown=str(qid))
            continue
        if not isinstance(qid, str):
            raise ScorerInputError(f"{result_file}: question id {qid!r} is not '<subtask>/<image>'")
        prompt = r.get("prompt")
        key = loose.key(qid, prompt, gt) if loose else answer_key(qid, str(prompt or ""), gt)
        if not tally.add(key):
            continue
        text = str(r.get("text", ""))
        if any(b in text for b in _BREAKS):
            if not lenient:
                broken.append(qid)
                continue
            text = " ".join(text.replace("\r", "\n").replace("\t", "\n").split("\n"))
        rows.setdefault(key[0], []).append({"id": qid, "file": key[1], "question": key[2], "gt": gt[key], "text": text})
    coverage = tally.finish()
    check_coverage(coverage, result_file, allow_partial)
    if broken:
        raise ScorerInputError(f"{result_file}: {len(broken)} answers hold a tab or line break (first: "
                               f"{', '.join(broken[:5])}), which breaks the converter's one-line-per-answer format "
                               f"that calculation.py reads; --lenient turns them into spaces")

    per_task, ordered = {}, {}
    for category, cat_rows in rows.items():
        pairs = _pairs(cat_rows, category, result_file, lenient)
        ordered[category] = [r for pair in pairs for r in pair]
        right = plus = 0
        for pair in pairs:
            ok = []
            for r in pair:
                gold = r["gt"].lower()
                if gold not in ("yes", "no"):
                    raise ScorerInputError(f"ground truth of {r['id']!r} ({r['question']!r}) is {r['gt']!r}, not yes/no")
                ok.append(mme_yes_no(r["text"]) == gold)
            right += sum(ok)
            plus += all(ok)
        acc, acc_plus = right / len(ordered[category]), plus / len(pairs)
        per_task[category] = {"acc": acc * 100, "acc_plus": acc_plus * 100, "score": acc * 100 + acc_plus * 100,
                              "num_questions": len(ordered[category]), "num_images": len(pairs)}

    def total(names: list[str]) -> float:
        score = 0
        for name in names:
            score += per_task[name]["score"] if name in per_task else 0
        return score

    return {"benchmark": "mme", "per_task": per_task, "perception": total(PERCEPTION), "cognition": total(COGNITION),
            "num_samples": sum(m["num_questions"] for m in per_task.values()), "coverage": coverage,
            "rows": ordered}


def write_results_dir(rows: dict[str, list[dict]], out_dir: str) -> list[str]:
    """The converter's output: ``<subtask>.txt`` per subtask, one answer per line (module doc)."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for category, cat_rows in rows.items():
        path = os.path.join(out_dir, f"{category}.txt")
        with open(path, "w") as fp:
            for r in cat_rows:
                fp.write("\t".join((r["file"], r["question"], r["gt"], r["text"])) + "\n")
        written.append(path)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.eval_mme",
                                description="MME scores as LLaVA's converter + MME's calculation.py compute them.")
    p.add_argument("--gt-dir", required=True,
                   help="MME_Benchmark_release_version, or eval_tool/Your_Results, with the ground truth")
    p.add_argument("--question-file", default=None,
                   help="llava_mme.jsonl: with --lenient, the questions of answers that have no 'prompt'")
    p.add_argument("--result-file", required=True, help="answers jsonl (question_id, prompt, text)")
    p.add_argument("--write-results-dir", default=None,
                   help="write the converter's <subtask>.txt files here (input of calculation.py --results_dir)")
    add_scorer_args(p, lenient="Group answers by image, turn tabs/line breaks into spaces, match questions "
                               "ignoring case, spacing and instruction suffixes.")
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    res = evaluate(args.gt_dir, args.result_file, args.question_file, allow_partial=args.allow_partial,
                   lenient=args.lenient)
    if args.write_results_dir:
        write_results_dir(res["rows"], args.write_results_dir)
        print(f"wrote calculation.py input to {args.write_results_dir}")
    tasks = res["per_task"]
    for title, names, tot in (("Perception", PERCEPTION, res["perception"]), ("Cognition", COGNITION, res["cognition"])):
        present = [n for n in names if n in tasks]
        if not present:
            continue
        print(f"=========== {title} ===========")
        print(f"total score: {tot}")
        for name in present:
            m = tasks[name]
            print(f"\t {name}  score: {m['score']}  (acc {m['acc']:.2f}, acc+ {m['acc_plus']:.2f})")
    print(f"MME cognition: {res['cognition']:.2f}")
    details = {"cognition": res["cognition"],
               "per_task": {s: {k: m[k] for k in ("acc", "acc_plus", "score")} for s, m in tasks.items()}}
    finish(args, "mme", res["perception"], f"MME perception: {res['perception']:.2f}", coverage=res["coverage"],
           result_file=args.result_file, num_samples=res["num_samples"], details=details)
    return {k: v for k, v in res.items() if k != "rows"}


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
