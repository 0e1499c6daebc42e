"""Every scoring command line of LLaVA's ``scripts/v1_5/eval/*.sh`` and ``docs/Evaluation.md``,
unchanged, run from a folder laid out as LLaVA's ``playground/data/eval`` (one process each)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_mmbench_scorer import ANSWERS as MMBENCH_ANSWERS
from test_mmbench_scorer import _run as _mmbench
from test_scorers import _gqa, _mme, _pope, _sqa
from test_vqa_scorers import TEXTVQA_ANSWERS, _textvqa, _vizwiz, _vqav2_dir

ROOT = Path(__file__).resolve().parents[1]
EVAL = Path("playground/data/eval")


def _run(cwd: Path, *args: str) -> str:
    """``python ARGS`` in ``cwd``; a path under llava/ or scripts/ is the repository's file."""
    argv = [sys.executable] + [str(ROOT / a) if a.startswith(("llava/", "scripts/")) else a for a in args]
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def test_original_command_lines(tmp_path):
    base = tmp_path / EVAL
    # textvqa.sh
    _textvqa(base / "textvqa", TEXTVQA_ANSWERS)
    out = _run(tmp_path, "-m", "llava.eval.eval_textvqa",
               "--annotation-file", "./playground/data/eval/textvqa/TextVQA_0.5.1_val.json",
               "--result-file", "./playground/data/eval/textvqa/answers/llava-v1.5-13b.jsonl")
    assert out.splitlines()[-1] == "Accuracy: 87.50%"
    out = _run(tmp_path, "-m", "llava.eval.eval_textvqa",
               "--annotation-file", "./playground/data/eval/textvqa/TextVQA_0.5.1_val.json",
               "--result-dir", "./playground/data/eval/textvqa/answers")
    assert out.splitlines()[-1] == "Accuracy: 87.50%"

    # pope.sh: the scorer run as a file
    argv = _pope(base / "pope")
    out = _run(tmp_path, "llava/eval/eval_pope.py", *argv)
    assert out.splitlines()[-1] == "POPE F1 (mean over 3 splits): 74.60"

    # sqa.sh
    argv = _sqa(base)
    out = _run(tmp_path, "llava/eval/eval_science_qa.py", *argv)
    assert out.splitlines()[-1] == "IMG-Accuracy: 60.00%"

    # gqa.sh: the converter, then (in GQA's data folder) eval.py's command line
    _gqa(base / "gqa")
    gqa_dir = base / "gqa" / "data"
    _run(tmp_path, "scripts/convert_gqa_for_eval.py", "--src", "./playground/data/eval/gqa/merge.jsonl",
         "--dst", "./playground/data/eval/gqa/data/testdev_balanced_predictions.json")
    out = _run(gqa_dir, "-m", "llava.eval.eval_gqa", "--tier", "testdev_balanced")
    assert out.splitlines()[-1] == "GQA accuracy: 75.00%"

    # vizwiz.sh
    _vizwiz(base / "vizwiz", [{"question_id": i, "text": "Yes"} for i in range(4)])
    _run(tmp_path, "scripts/convert_vizwiz_for_submission.py",
         "--annotation-file", "./playground/data/eval/vizwiz/llava_test.jsonl",
         "--result-file", "./playground/data/eval/vizwiz/answers.jsonl",
         "--result-upload-file", "./playground/data/eval/vizwiz/answers_upload/llava-v1.5-13b.json")
    assert len(json.loads((base / "vizwiz" / "answers_upload" / "llava-v1.5-13b.json").read_text())) == 4

    # vqav2.sh: --dir defaults to ./playground/data/eval/vqav2
    _, split = _vqav2_dir(base, [{"question_id": i, "text": "Two"} for i in (11, 12, 13)])
    _run(tmp_path, "scripts/convert_vqav2_for_submission.py", "--split", split, "--ckpt", "llava-v1.5-13b")
    upload = json.loads((base / "vqav2" / "answers_upload" / split / "llava-v1.5-13b.json").read_text())
    assert [u["answer"] for u in upload] == ["2", "2", "2", ""]

    # mmbench.sh / mmbench_cn.sh
    for name, split in (("mmbench", "mmbench_dev_20230712"), ("mmbench_cn", "mmbench_dev_cn_20231003")):
        d = base / name
        d.mkdir(parents=True)
        _mmbench(d, MMBENCH_ANSWERS, name=f"{split}.tsv")
        (d / "answers" / "run1.jsonl").rename(d / "answers" / "llava-v1.5-13b.jsonl")
        _run(tmp_path, "scripts/convert_mmbench_for_submission.py",
             "--annotation-file", f"./playground/data/eval/{name}/{split}.tsv",
             "--result-dir", f"./playground/data/eval/{name}/answers",
             "--upload-dir", f"./playground/data/eval/{name}/answers_upload/{split}", "--experiment", "llava-v1.5-13b")
        assert (d / "answers_upload" / split / "llava-v1.5-13b.xlsx").is_file()

    # mmvet.sh
    mmvet = base / "mm-vet"
    (mmvet / "answers").mkdir(parents=True)
    (mmvet / "mm-vet.json").write_text(json.dumps({f"v1_{i}": {"question": "q", "answer": "a", "capability": ["rec"]}
                                                   for i in range(3)}))
    (mmvet / "answers" / "llava-v1.5-13b.jsonl").write_text(
        "".join(json.dumps({"question_id": i, "text": f"answer {i}"}) + "\n" for i in range(3)))
    (mmvet / "results").mkdir()
    _run(tmp_path, "scripts/convert_mmvet_for_eval.py", "--src", "./playground/data/eval/mm-vet/answers/llava-v1.5-13b.jsonl",
         "--dst", "./playground/data/eval/mm-vet/results/llava-v1.5-13b.json")
    assert json.loads((mmvet / "results" / "llava-v1.5-13b.json").read_text()) == {
        "v1_0": "answer 0", "v1_1": "answer 1", "v1_2": "answer 2"}

    # mme.sh: LLaVA's converter + MME's calculation.py come with the data; this is their one-step equivalent
    argv = _mme(base / "MME")
    out = _run(tmp_path, "-m", "llava.eval.eval_mme", *argv, "--write-results-dir",
               "./playground/data/eval/MME/eval_tool/answers/llava-v1.5-13b")
    assert out.splitlines()[-1] == "MME perception: 325.00"
    assert (base / "MME" / "eval_tool" / "answers" / "llava-v1.5-13b" / "existence.txt").is_file()
