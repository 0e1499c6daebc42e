"""The harness for every method: the benchmark scripts pass METHOD / RATIO / EXTRA_ARGS through
to the drivers whatever the method (registered here or not), a driver runs a peer end to end and
records its options, and llava.eval.summarize keeps each method's option set in its own row, in
Table II's order."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "v1_5" / "eval"


def _stub(tmp_path: Path) -> tuple[Path, Path]:
    """An interpreter that only logs its command line (one line per call)."""
    log = tmp_path / "calls.log"
    stub = tmp_path / "python-stub"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{log}"\n')
    stub.chmod(0o755)
    return stub, log


@pytest.mark.parametrize("method,extra", [
    ("visionzip", "--merge mean --newlines all"),
    ("prumerge_plus", "--budget adaptive"),
    ("fastv", "--batch-size 2"),  # a method this tree may not register yet: passed through untouched
])
def test_scripts_pass_any_method_and_its_options_through(tmp_path, method, extra):
    stub, log = _stub(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("CHUNKS", "GPULIST", "CUDA_VISIBLE_DEVICES", "TAG", "NPROC")}
    env.update(PYTHON=str(stub), DATA=str(tmp_path / "data"), CKPT="m", MODEL_PATH="/ckpt/m", METHOD=method,
               RATIO="0.1", EXTRA_ARGS=extra)
    proc = subprocess.run(["bash", str(SCRIPTS / "textvqa.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    gen, score = log.read_text().splitlines()
    assert gen.startswith("-m llava.eval.model_vqa_loader ")
    assert f"--compression {method} --retention-ratio 0.1" in gen and gen.rstrip().endswith(extra + f" --answers-file {tmp_path}/data/textvqa/answers/m-{method}-r0.1/merge.jsonl")
    assert score.startswith("-m llava.eval.eval_textvqa ") and f"m-{method}-r0.1/score_textvqa.json" in score


def test_an_empty_ratio_runs_a_method_without_one(tmp_path):
    """METHOD=pdrop RATIO= : no --retention-ratio reaches the driver or the scorer, and the
    answers folder is named without a ratio (mmvet.sh passes the score metadata itself)."""
    stub, log = _stub(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("CHUNKS", "GPULIST", "CUDA_VISIBLE_DEVICES", "TAG", "NPROC")}
    env.update(PYTHON=str(stub), DATA=str(tmp_path / "data"), CKPT="m", MODEL_PATH="/ckpt/m", METHOD="pdrop",
               RATIO="", EXTRA_ARGS="--pdrop-ratios 0.5,0.25,0.125")
    for script in ("textvqa.sh", "mmvet.sh"):
        log.write_text("")
        proc = subprocess.run(["bash", str(SCRIPTS / script)], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        calls = log.read_text().splitlines()
        assert "--compression pdrop" in calls[0] and all("--retention-ratio" not in c for c in calls)
        assert "/m-pdrop/merge.jsonl" in calls[0]


def test_a_driver_runs_a_peer_and_summarize_keeps_option_sets_apart(tiny_ckpt, vqa, tmp_path, capsys):
    from eval_utils import loader_args

    from llava.eval import model_vqa_loader, summarize

    out = tmp_path / "textvqa" / "answers" / "zip-mean" / "merge.jsonl"
    model_vqa_loader.main(loader_args(tiny_ckpt, vqa, out, "--compression", "visionzip", "--retention-ratio", "0.1",
                                      "--merge", "mean"))
    answers = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(answers) == 5 and all(a["text"] for a in answers)
    comp = json.loads((out.parent / "config.json").read_text())["compression"]
    assert (comp["name"], comp["retention_ratio"], comp["merge"]) == ("visionzip", 0.1, "mean")
    # (loader_args' own flags ask for globalcom2 first: the later --compression wins, as in argparse)
    from llava.eval import scoring_utils

    scoring_utils.main(["--benchmark", "textvqa", "--score", "40", "--result-file", str(out),
                        "--score-file", str(out.parent / "score_textvqa.json")])
    rec = json.loads((out.parent / "score_textvqa.json").read_text())
    assert rec["method"] == "visionzip" and rec["compression"]["merge"] == "mean"  # every option, from config.json

    # the same method with its default options, a peer, GlobalCom², an unknown method, uncompressed
    for tag, compression in [("zip", {"name": "visionzip", "retention_ratio": 0.1, "merge": "release"}),
                             ("hired", {"name": "hired", "retention_ratio": 0.1}),
                             ("gc", {"name": "globalcom2", "retention_ratio": 0.1}),
                             ("fastv", {"name": "fastv", "retention_ratio": 0.1}),
                             ("full", None)]:
        d = tmp_path / "textvqa" / "answers" / tag
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"compression": compression, "model": rec["model"]}))
        (d / "merge.jsonl").write_text("")
        scoring_utils.main(["--benchmark", "textvqa", "--score", "50", "--result-file", str(d / "merge.jsonl"),
                            "--score-file", str(d / "score_textvqa.json")])
    capsys.readouterr()
    rows = summarize.main(["--results-dir", str(tmp_path)])
    assert [(r["method"], r["options"]) for r in rows] == [
        ("uncompressed", ""), ("fastv", ""), ("visionzip", ""), ("visionzip", "merge=mean"), ("hired", ""),
        ("globalcom2", "")]
    assert "visionzip (merge=mean)" in capsys.readouterr().out
