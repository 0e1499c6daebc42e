"""The lmms-eval CLI end to end, in one subprocess: our plug-in models on the local tasks of a
tiny data root, and the video models on a tiny video task (tests/lmms_video_task). lmms-eval
exits 0 even when an evaluation crashed, so everything is read from the files it writes: the
results file (metric, kept-token ratio) and the per-sample log (visual tokens before/after,
per-frame records, resolved compression config) — and compared with what the scripts' drivers
and scorers produce for the same questions, and with the frames and token counts derived by hand."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
import yaml
from lmms_data import VIDEO_INDICES, VIDEO_MEDIA_ENV, VIDEO_TASK_DIR, write_eval_data

pytest.importorskip("lmms_eval", reason="lmms-eval is installed by `make lmms` (and `make test`)")

from llava.compression import build_compressor  # noqa: E402
from llava.lmms import TASKS_DIR  # noqa: E402
from llava.mm_utils import anyres_token_count  # noqa: E402

V16 = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
NEW_TOKENS = 4
GC2_TASKS = {"gqa_local": "gqa_accuracy", "pope_local": "pope_f1", "mmbench_local": "mmbench_circular_accuracy"}
GC2_CONFIG = build_compressor("globalcom2", retention_ratio=0.25).to_dict()  # defaults pinned in test_lmms_model
#: run name → (model, method, model arguments) of the video runs
VIDEO_RUNS = {"ov_video": ("llava_onevision_gc2", "globalcom2", "max_frames_num=4"),
              "qwen_video": ("qwen2_vl_gc2", "vidcom2", "max_num_frames=4")}


def _cli() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "lmms-eval")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "lmms_eval"]


@pytest.fixture(scope="module")
def run(tiny_ckpt, video_checkpoints, video_media, tmp_path_factory):
    """One lmms-eval process, four runs (``--config`` with a list): llava_gc2 compressed,
    llava_hf_gc2 compressed on the same weights converted to transformers' format, and the tiny
    OneVision and Qwen2-VL on the video task. (A run that crashes — e.g.
    ``compression=fastervlm,alpha=0.5`` — prints its traceback, writes no results file and
    leaves the exit code at 0, so only the files tell.)"""
    from llava.convert import original_to_hf

    tmp = tmp_path_factory.mktemp("lmms-e2e")
    data = write_eval_data(str(tmp / "data"))
    hf_ckpt = str(tmp / "tiny-hf")
    original_to_hf(tiny_ckpt, hf_ckpt)
    common = {"include_path": TASKS_DIR, "log_samples": True, "gen_kwargs": f"max_new_tokens={NEW_TOKENS}",
              "batch_size": 1, "verbosity": "INFO"}
    runs = {
        "gc2": {"model": "llava_gc2", "tasks": ",".join(GC2_TASKS),
                "model_args": f"pretrained={tiny_ckpt},compression=globalcom2,retention_ratio=0.25,device=cpu"},
        "hf": {"model": "llava_hf_gc2", "tasks": ",".join(GC2_TASKS),
               "model_args": f"pretrained={hf_ckpt},compression=globalcom2,retention_ratio=0.25,device=cpu", "batch_size": 2},
    }
    for name, (model, method, args) in VIDEO_RUNS.items():
        runs[name] = {"model": model, "tasks": "video_tiny", "include_path": VIDEO_TASK_DIR, "batch_size": 2,
                      "model_args": f"pretrained={video_checkpoints[model]},compression={method},"
                                    f"retention_ratio=0.25,{args},device=cpu"}
    configs = [{**common, **spec, "output_path": str(tmp / "out" / name)} for name, spec in runs.items()]
    cfg = tmp / "runs.yaml"
    cfg.write_text(yaml.safe_dump(configs))
    env = {**os.environ, "LLAVA_EVAL_DATA": data, VIDEO_MEDIA_ENV: video_media, "HF_HOME": str(tmp / "hf"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([*_cli(), "--config", str(cfg)], env=env, cwd=tmp, capture_output=True, text=True,
                          timeout=900)
    log = proc.stdout + proc.stderr
    return tmp, data, log


def _outputs(tmp, name: str, log: str):
    found = glob.glob(str(tmp / "out" / name / "*" / "*_results.json"))
    assert len(found) == 1, f"run {name!r} wrote no results file (the evaluation crashed); log tail:\n{log[-4000:]}"
    results = json.load(open(found[0], encoding="utf-8"))
    samples = {}
    for task in results["results"]:
        (path,) = glob.glob(os.path.join(os.path.dirname(found[0]), f"*_samples_{task}.jsonl"))
        samples[task] = sorted((json.loads(x) for x in open(path, encoding="utf-8")), key=lambda s: s["doc_id"])
    return results, samples


def _driver_answers(module, tiny_ckpt, tmp, args: list[str], name: str) -> list[dict]:
    out = tmp / "driver" / name / "merge.jsonl"  # one folder per run, as the scripts keep them
    module.main(["--model-path", tiny_ckpt, "--answers-file", str(out), "--max-new-tokens", str(NEW_TOKENS),
                 "--compression", "globalcom2", "--retention-ratio", "0.25", *args])
    return [json.loads(x) for x in open(out, encoding="utf-8")]


def test_compressed_run_matches_the_scripts(run, tiny_ckpt):
    from llava.eval import eval_gqa, eval_mmbench, eval_pope, model_vqa_loader, model_vqa_mmbench

    tmp, data, log = run
    results, samples = _outputs(tmp, "gc2", log)
    assert set(results["results"]) == set(GC2_TASKS)

    # the same answers as the scripts' drivers give to the same questions, with the same token counts
    drivers = {
        "gqa_local": _driver_answers(model_vqa_loader, tiny_ckpt, tmp, [
            "--question-file", f"{data}/gqa/llava_gqa_testdev_balanced.jsonl", "--image-folder",
            f"{data}/gqa/data/images"], "gqa"),
        "pope_local": _driver_answers(model_vqa_loader, tiny_ckpt, tmp, [
            "--question-file", f"{data}/pope/llava_pope_test.jsonl", "--image-folder", f"{data}/pope/val2014"], "pope"),
        "mmbench_local": _driver_answers(model_vqa_mmbench, tiny_ckpt, tmp, [
            "--question-file", f"{data}/mmbench/mmbench_dev_20230712.tsv", "--single-pred-prompt"], "mmbench"),
    }
    for task, answers in drivers.items():
        assert results["n-samples"][task] == {"original": len(answers), "effective": len(answers)}
        assert [s["filtered_resps"] for s in samples[task]] == [a["text"] for a in answers], task
        for s, a in zip(samples[task], answers):
            counts = s["token_counts"][0]
            assert counts["visual_tokens"] == a["metadata"]["visual_tokens"]
            assert counts["visual_tokens_uncompressed"] == a["metadata"]["visual_tokens_uncompressed"]
            assert counts["images"][0]["crop_kept"] == a["metadata"]["crop_kept"]
            assert counts["visual_tokens"] < counts["visual_tokens_uncompressed"]
            assert counts["compression"] == GC2_CONFIG
            assert 1 <= counts["output_tokens"] <= NEW_TOKENS

    # the metrics are the scorers' numbers on the drivers' answers files
    r = results["results"]
    gt = eval_gqa.load_questions(f"{data}/gqa/data/testdev_balanced_questions.json")
    entries, _ = eval_gqa.read_predictions(str(tmp / "driver" / "gqa" / "merge.jsonl"), gt)
    assert r["gqa_local"]["gqa_accuracy,none"] == pytest.approx(eval_gqa.evaluate(gt, entries)["accuracy"])
    pope = eval_pope.evaluate(f"{data}/pope/coco", f"{data}/pope/llava_pope_test.jsonl", str(tmp / "driver" / "pope" / "merge.jsonl"))
    assert r["pope_local"]["pope_f1,none"] == pytest.approx(pope["f1_mean"])
    df = eval_mmbench.load_tsv(f"{data}/mmbench/mmbench_dev_20230712.tsv")
    usable, _ = eval_mmbench.read_answers(df, str(tmp / "driver" / "mmbench" / "merge.jsonl"), allow_partial=False)
    assert r["mmbench_local"]["mmbench_circular_accuracy,none"] == pytest.approx(
        eval_mmbench.evaluate(df, usable)["circular_accuracy"])

    # the run's kept-token ratio: kept / uncompressed over every image of every task
    all_counts = [s["token_counts"][0] for task in samples for s in samples[task]]
    kept = sum(c["visual_tokens"] for c in all_counts)
    full = sum(c["visual_tokens_uncompressed"] for c in all_counts)
    throughput = results["throughput"]
    assert throughput["avg_visual_token_ratio"] == pytest.approx(kept / full)
    assert 0.2 < throughput["avg_visual_token_ratio"] < 0.35
    for task in GC2_TASKS:
        counts = [s["token_counts"][0] for s in samples[task]]
        assert throughput[f"avg_visual_token_ratio/{task}"] == pytest.approx(
            sum(c["visual_tokens"] for c in counts) / sum(c["visual_tokens_uncompressed"] for c in counts))
    # the uncompressed figure is LLaVA-NeXT's own token count for the image
    from PIL import Image

    questions = [json.loads(x) for x in open(f"{data}/gqa/llava_gqa_testdev_balanced.jsonl", encoding="utf-8")]
    for s in samples["gqa_local"]:
        size = Image.open(f"{data}/gqa/data/images/{questions[s['doc_id']]['image']}").size
        assert s["token_counts"][0]["visual_tokens_uncompressed"] == anyres_token_count(size, V16)


def test_transformers_run_scores_with_our_scorers(run):
    """llava_hf_gc2 through the CLI: its metrics are our scorers' numbers on the answers it
    wrote; it keeps exactly as many visual tokens as our tree does for the same images."""
    from llava.eval import eval_gqa, eval_pope

    tmp, data, log = run
    results, samples = _outputs(tmp, "hf", log)
    _, tree = _outputs(tmp, "gc2", log)
    r = results["results"]

    def answers(task):
        (path,) = glob.glob(str(tmp / "out" / "hf" / "submissions" / f"{task}-*-answers.jsonl"))
        return path

    gt = eval_gqa.load_questions(f"{data}/gqa/data/testdev_balanced_questions.json")
    entries, _ = eval_gqa.read_predictions(answers("gqa_local"), gt)
    assert r["gqa_local"]["gqa_accuracy,none"] == pytest.approx(eval_gqa.evaluate(gt, entries)["accuracy"])
    pope = eval_pope.evaluate(f"{data}/pope/coco", f"{data}/pope/llava_pope_test.jsonl", answers("pope_local"))
    assert r["pope_local"]["pope_f1,none"] == pytest.approx(pope["f1_mean"])
    texts = [json.loads(x)["text"] for x in open(answers("gqa_local"), encoding="utf-8")]
    assert texts == [s["filtered_resps"] for s in samples["gqa_local"]]
    for task in GC2_TASKS:
        assert len(samples[task]) == len(tree[task])
        for hf_s, tree_s in zip(samples[task], tree[task]):
            a, b = hf_s["token_counts"][0], tree_s["token_counts"][0]
            assert (a["visual_tokens"], a["visual_tokens_uncompressed"]) == (b["visual_tokens"], b["visual_tokens_uncompressed"])
            assert a["images"][0]["crop_kept"] == b["images"][0]["crop_kept"]
            assert a["compression"] == GC2_CONFIG
    assert results["throughput"]["avg_visual_token_ratio"] == pytest.approx(
        _outputs(tmp, "gc2", log)[0]["throughput"]["avg_visual_token_ratio"])


@pytest.mark.parametrize("name", sorted(VIDEO_RUNS))
def test_video_runs(run, name):
    """The video models through the CLI: the task's metric on the answers they wrote, every
    video seen at the frames lmms-eval's own models take (by hand), its uncompressed count the
    model's own (OneVision: 4 frames of 4×4 pooled tokens and a newline; Qwen2-VL: 2 temporal
    patches of 3×4 merged tokens), compressed as asked, and the run's figures over them."""
    model, method, _ = VIDEO_RUNS[name]
    tmp, _, log = run
    results, samples = _outputs(tmp, name, log)
    docs = [json.loads(x) for x in open(os.path.join(VIDEO_TASK_DIR, "video_tiny.jsonl"), encoding="utf-8")]
    assert results["n-samples"]["video_tiny"] == {"original": len(docs), "effective": len(docs)}
    rows = samples["video_tiny"]
    hits = [float(s["filtered_resps"].strip().lower() == d["answer"]) for s, d in zip(rows, docs)]
    assert results["results"]["video_tiny"]["video_accuracy,none"] == pytest.approx(sum(hits) / len(hits))
    full = 4 * 4 * 4 + 1 if model == "llava_onevision_gc2" else 2 * 3 * 4
    config = build_compressor(method, retention_ratio=0.25).to_dict()
    if "score" in config:  # as it runs: these towers have no [CLS], so GlobalCom² scores by neg_cos
        config["score"] = "neg_cos"
    for s, d in zip(rows, docs):
        counts = s["token_counts"][0]
        (video,) = counts["videos"]
        assert video["frame_indices"] == VIDEO_INDICES[model][d["video"]]
        assert video["tokens_uncompressed"] == full and video["frames"] == len(video["frame_kept"])
        assert 0 < video["tokens"] <= 0.3 * full and video["tokens"] >= sum(video["frame_kept"])
        assert len(counts["images"]) == (1 if d["image"] else 0)
        assert counts["visual_tokens"] == video["tokens"] + sum(i["tokens"] for i in counts["images"])
        assert counts["compression"] == config
        assert 1 <= counts["output_tokens"] <= NEW_TOKENS
        if method == "globalcom2":  # its per-frame budgets r_f, one per frame
            assert len(video["budgets"]) == video["frames"]
    throughput = results["throughput"]
    all_counts = [s["token_counts"][0] for s in rows]
    assert throughput["avg_visual_token_ratio"] == pytest.approx(
        sum(c["visual_tokens"] for c in all_counts) / sum(c["visual_tokens_uncompressed"] for c in all_counts))
    assert throughput["avg_visual_tokens_per_video"] == pytest.approx(
        sum(c["videos"][0]["tokens"] for c in all_counts) / len(all_counts))
    assert throughput["avg_visual_tokens_uncompressed_per_video"] == full
