"""MME offline scorer: per-subtask acc / acc+, perception and cognition totals.

Ground truth (``--gt-dir``), either layout is accepted:
  * the released ``eval_tool/Your_Results/`` folder (or ``eval_tool/`` itself): one
    ``<subtask>.txt`` per subtask, tab-separated ``image_name<TAB>question<TAB>answer``
    lines (two questions per image, answers ``Yes``/``No``);
  * ``MME_Benchmark_release_version/``: one folder per subtask with per-image
    ``<image_stem>.txt`` files of ``question<TAB>answer`` lines, either next to the images or in
    ``questions_answers_YN/`` (images then in ``images/``).

Answers (``--result-file``) are jsonl lines ``{"question_id", "prompt", "text", ...}`` where
``question_id`` is ``<subtask>/<image file>`` (both questions of an image share it).  The
optional ``--question-file`` (``llava_mme.jsonl``: ``question_id, image, text, category`` with
``image`` = ``<subtask>/[images/]<file>``) supplies the subtask and, when an answer has no
``prompt``, the question text (the n-th answer of an id <-> the n-th question of that id).
Answers are matched to ground truth by (subtask, image stem, question text), ignoring case,
spacing and the "Please answer yes or no." / "Answer the question using a single word or
phrase." suffixes.

Answer parsing (as the official ``calculation.py``): lower-case; exactly ``yes``/``no``, else
``yes`` if the first 4 characters contain "yes", ``no`` if they contain "no", else ``other``
(always wrong).

Per subtask: acc = % questions right, acc+ = % images with all their questions right,
score = acc + acc+.  Perception = sum over existence, count, position, color, posters,
celebrity, scene, landmark, artwork, OCR (max 2000); cognition = sum over
commonsense_reasoning, numerical_calculation, text_translation, code_reasoning (max 800).

``--write-results-dir DIR`` writes ``DIR/<subtask>.txt`` in the eval_tool format with the raw
prediction as a 4th column (the input of the official ``calculation.py``).  The last printed line
is ``MME perception: XXXX.XX``.
"""

from __future__ import annotations

import argparse
import os
import re

from llava.eval.scoring_utils import (
    ScorerInputError,
    add_score_args,
    load_jsonl,
    maybe_write_score,
    qid_key,
    require_dir,
    run_cli,
)

PERCEPTION = ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
              "artwork", "OCR"]
COGNITION = ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]
_SUFFIXES = ("please answer yes or no.", "answer the question using a single word or phrase.")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def parse_yes_no(text: str) -> str:
    """``"yes"``, ``"no"`` or ``"other"`` from the start of a model answer."""
    t = str(text).strip().lower()
    if t in ("yes", "no"):
        return t
    head = t[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def norm_question(text: str) -> str:
    t = " ".join(str(text).replace("<image>", " ").split()).lower()
    changed = True
    while changed:
        changed = False
        for suf in _SUFFIXES:
            if t.endswith(suf):
                t = t[: -len(suf)].strip()
                changed = True
    return t


def _stem(name: str) -> str:
    return os.path.splitext(os.path.basename(str(name)))[0]


def load_ground_truth(gt_dir: str) -> dict[str, list[tuple[str, str, str]]]:
    """``{subtask: [(image_name, question, answer), ...]}`` in file order."""
    require_dir(gt_dir, "MME ground-truth directory")
    if os.path.isdir(os.path.join(gt_dir, "Your_Results")):
        gt_dir = os.path.join(gt_dir, "Your_Results")
    entries = sorted(os.listdir(gt_dir))
    txts = [e for e in entries if e.endswith(".txt") and os.path.isfile(os.path.join(gt_dir, e))]
    gt: dict[str, list[tuple[str, str, str]]] = {}
    if txts:
        for fname in txts:
            path = os.path.join(gt_dir, fname)
            rows = []
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    parts = line.rstrip("\n").split("\t")
                    if len(parts) < 3:
                        raise ScorerInputError(f"{path}:{lineno}: expected image<TAB>question<TAB>answer")
                    rows.append((parts[0].strip(), parts[1].strip(), parts[2].strip()))
            gt[fname[:-4]] = rows
        return gt
    for sub in entries:
        sub_dir = os.path.join(gt_dir, sub)
        if not os.path.isdir(sub_dir):
            continue
        qa_dir = os.path.join(sub_dir, "questions_answers_YN")
        img_dir = os.path.join(sub_dir, "images")
        if not os.path.isdir(qa_dir):
            qa_dir, img_dir = sub_dir, sub_dir
        images = {}
        if os.path.isdir(img_dir):
            images = {_stem(f): f for f in os.listdir(img_dir) if f.lower().endswith(_IMAGE_EXTS)}
        rows = []
        for fname in sorted(os.listdir(qa_dir)):
            if not fname.endswith(".txt"):
                continue
            stem = fname[:-4]
            path = os.path.join(qa_dir, fname)
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    parts = line.rstrip("\n").split("\t")
                    if len(parts) < 2:
                        raise ScorerInputError(f"{path}:{lineno}: expected question<TAB>answer")
                    rows.append((images.get(stem, stem + ".jpg"), parts[0].strip(), parts[1].strip()))
        if rows:
            gt[sub] = rows
    if not gt:
        raise ScorerInputError(f"no MME ground-truth .txt files found under {gt_dir} "
                               f"(see playground/data/eval/README.md)")
    return gt


def evaluate(gt_dir: str, result_file: str, question_file: str | None = None) -> dict:
    gt = load_ground_truth(gt_dir)
    canon = {name.lower(): name for name in gt}
    index: dict[tuple[str, str, str], tuple[str, int]] = {}
    for sub, rows in gt.items():
        for i, (img, q, _a) in enumerate(rows):
            index[(sub.lower(), _stem(img), norm_question(q))] = (sub, i)

    questions_by_id: dict[str, list[dict]] = {}
    if question_file:
        for q in load_jsonl(question_file, "question file"):
            questions_by_id.setdefault(qid_key(q.get("question_id")), []).append(q)

    predictions: dict[str, dict[int, str]] = {}
    seen_count: dict[str, int] = {}
    unmatched = []
    for r in load_jsonl(result_file, "result file"):
        qid = qid_key(r.get("question_id"))
        k = seen_count.get(qid, 0)
        seen_count[qid] = k + 1
        qents = questions_by_id.get(qid, [])
        qent = qents[k] if k < len(qents) else (qents[0] if qents else {})
        sub = r.get("category") or qent.get("category") or qid.split("/")[0]
        image = qent.get("image") or qid
        question = r.get("prompt") if r.get("prompt") else qent.get("text", "")
        sub_name = canon.get(str(sub).lower())
        hit = index.get((str(sub).lower(), _stem(image), norm_question(question))) if sub_name else None
        if hit is None:
            unmatched.append(qid)
            continue
        predictions.setdefault(hit[0], {})[hit[1]] = str(r.get("text", ""))

    per_task = {}
    for sub, preds in predictions.items():
        rows = gt[sub]
        right = 0
        per_image: dict[str, list[bool]] = {}
        for i, (img, _q, ans) in enumerate(rows):
            per_image.setdefault(img, [])
            if i in preds:
                ok = parse_yes_no(preds[i]) == ans.strip().lower()
                right += ok
                per_image[img].append(ok)
            else:
                per_image[img].append(None)
        answered_imgs = {img: oks for img, oks in per_image.items() if any(o is not None for o in oks)}
        acc = 100.0 * right / len(preds)
        acc_plus = 100.0 * sum(all(o is True for o in oks) for oks in answered_imgs.values()) / len(answered_imgs)
        per_task[sub] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus,
                         "num_questions": len(preds), "num_images": len(answered_imgs),
                         "num_gt_questions": len(rows)}

    def total(names):
        lower = {n.lower() for n in names}
        return sum(m["score"] for s, m in per_task.items() if s.lower() in lower)

    return {
        "benchmark": "mme",
        "per_task": per_task,
        "perception": total(PERCEPTION),
        "cognition": total(COGNITION),
        "num_samples": sum(m["num_questions"] for m in per_task.values()),
        "num_unmatched": len(unmatched),
        "unmatched_question_ids": unmatched[:20],
        "predictions": predictions,
        "ground_truth": gt,
    }


def write_results_dir(res: dict, out_dir: str) -> list[str]:
    """Write eval_tool-format ``<subtask>.txt`` files with the prediction as 4th column."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for sub, preds in res["predictions"].items():
        path = os.path.join(out_dir, f"{sub}.txt")
        with open(path, "w", encoding="utf-8") as fh:
            for i, (img, q, ans) in enumerate(res["ground_truth"][sub]):
                pred = re.sub(r"[\t\r\n]+", " ", preds.get(i, "")).strip()
                fh.write(f"{img}\t{q}\t{ans}\t{pred}\n")
        written.append(path)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.eval_mme",
                                description="MME acc / acc+ per subtask, perception and cognition scores.")
    p.add_argument("--gt-dir", required=True,
                   help="eval_tool/Your_Results (or MME_Benchmark_release_version) with the ground truth")
    p.add_argument("--question-file", default=None, help="llava_mme.jsonl (optional)")
    p.add_argument("--result-file", required=True, help="answers jsonl (question_id, prompt, text)")
    p.add_argument("--write-results-dir", default=None,
                   help="write eval_tool-format <subtask>.txt files with predictions here")
    add_score_args(p)
    return p


def _order(names, canonical):
    low = {n.lower(): n for n in names}
    return [low[c.lower()] for c in canonical if c.lower() in low]


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    res = evaluate(args.gt_dir, args.result_file, args.question_file)
    if res["num_unmatched"]:
        print(f"warning: {res['num_unmatched']} answer(s) matched no ground-truth question, e.g. "
              f"{res['unmatched_question_ids'][:5]}")
    if args.write_results_dir:
        write_results_dir(res, args.write_results_dir)
        print(f"wrote eval_tool results to {args.write_results_dir}")
    tasks = res["per_task"]
    for title, names, tot in (("Perception", PERCEPTION, res["perception"]),
                              ("Cognition", COGNITION, res["cognition"])):
        present = _order(tasks, names)
        if not present:
            continue
        print(f"=========== {title} ===========")
        print(f"total score: {tot:.2f}")
        for sub in present:
            m = tasks[sub]
            print(f"\t {sub}  score: {m['score']:.2f}  (acc {m['acc']:.2f}, acc+ {m['acc_plus']:.2f}, "
                  f"{m['num_questions']} questions)")
    details = {"cognition": res["cognition"],
               "per_task": {s: {k: m[k] for k in ("acc", "acc_plus", "score")} for s, m in tasks.items()}}
    maybe_write_score(args, "mme", res["perception"], result_file=args.result_file,
                      num_samples=res["num_samples"], details=details)
    print(f"MME cognition: {res['cognition']:.2f}")
    print(f"MME perception: {res['perception']:.2f}")
    return {k: v for k, v in res.items() if k not in ("predictions", "ground_truth")}


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
