"""The local lmms-eval tasks: the drivers' prompts and images, scored by our scorers (hand-worked
numbers on a tiny data root), the YAMLs as lmms-eval reads them."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
from lmms_data import write_eval_data

from llava.eval import model_vqa_loader, model_vqa_mmbench, model_vqa_science
from llava.lmms import TASKS_DIR
from llava.lmms.tasks import docs, scoring
from llava.mm_utils import load_image, load_image_from_base64

pytest.importorskip("datasets", reason="the local tasks need `datasets` (make lmms)")

TASKS = ["vqav2_local", "gqa_local", "vizwiz_local", "sqa_local", "textvqa_local", "pope_local", "mme_local",
         "mmbench_local", "mmbench_cn_local", "mmvet_local"]
DOCS = {"vqav2_local": "vqav2_docs", "gqa_local": "gqa_docs", "vizwiz_local": "vizwiz_docs", "sqa_local": "sqa_docs",
        "textvqa_local": "textvqa_docs", "pope_local": "pope_docs", "mme_local": "mme_docs",
        "mmbench_local": "mmbench_docs_en", "mmbench_cn_local": "mmbench_docs_cn", "mmvet_local": "mmvet_docs"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_eval_data(str(tmp_path_factory.mktemp("eval-data")))


@pytest.fixture
def root(data, monkeypatch):
    monkeypatch.setenv(docs.DATA_ENV, data)
    return data


def _driver_items(task: str, root: str):
    """(question_id, message asked, prompt written, image) as the scripts' driver has them."""
    short = {"vqav2_local": ("vqav2/llava_vqav2_mscoco_test-dev2015.jsonl", "vqav2/test2015"),
             "gqa_local": ("gqa/llava_gqa_testdev_balanced.jsonl", "gqa/data/images"),
             "vizwiz_local": ("vizwiz/llava_test.jsonl", "vizwiz/test"),
             "textvqa_local": ("textvqa/llava_textvqa_val_v051_ocr.jsonl", "textvqa/train_images"),
             "pope_local": ("pope/llava_pope_test.jsonl", "pope/val2014"),
             "mme_local": ("MME/llava_mme.jsonl", "MME/MME_Benchmark_release_version"),
             "mmvet_local": ("mm-vet/llava-mm-vet.jsonl", "mm-vet/images")}
    if task in short:
        qfile, folder = short[task]
        items = model_vqa_loader.load_questions(os.path.join(root, qfile))
        return [(it.question_id, it.message, it.prompt, load_image(os.path.join(root, folder, it.image)))
                for it in items]
    if task == "sqa_local":
        items = model_vqa_science.load_questions(os.path.join(root, "scienceqa/llava_test_CQM-A.json"), True)
        return [(it.question_id, it.message, it.prompt,
                 load_image(os.path.join(root, "scienceqa/images/test", it.image)) if it.image else None) for it in items]
    tsv, lang = ("mmbench_dev_20230712.tsv", "en") if task == "mmbench_local" else ("mmbench_dev_cn_20231003.tsv", "cn")
    items = model_vqa_mmbench.load_questions(os.path.join(root, "mmbench", tsv), True, lang)
    return [(it.question_id, it.message, it.prompt, load_image_from_base64(it.image)) for it in items]


@pytest.mark.parametrize("task", TASKS)
def test_documents_are_the_drivers_questions(task, root):
    got = getattr(docs, DOCS[task])(None)
    want = _driver_items(task, root)
    assert len(got) == len(want) > 0
    for pos, (doc, (qid, message, prompt, image)) in enumerate(zip(got, want)):
        assert (json.loads(doc["qid"]), doc["position"], docs.doc_to_text(doc), doc["prompt"]) == (
            qid, pos, message, prompt)
        visual = docs.doc_to_visual(doc)
        if image is None:
            assert visual == []
        else:
            assert len(visual) == 1 and visual[0].tobytes() == image.tobytes() and visual[0].size == image.size


def test_missing_files_are_named(root, tmp_path, monkeypatch):
    monkeypatch.setenv(docs.DATA_ENV, str(tmp_path))
    with pytest.raises(docs.LocalDataError, match=r"question file not found: .*gqa/llava_gqa_testdev_balanced.jsonl "
                                                  r"\(data root \$LLAVA_EVAL_DATA="):
        docs.gqa_docs(None)
    monkeypatch.setenv(docs.DATA_ENV, root)
    os.rename(os.path.join(root, "pope/val2014/COCO_val2014_000000000002.jpg"), os.path.join(root, "moved.jpg"))
    try:
        with pytest.raises(docs.LocalDataError, match=r"1 image\(s\) not found \(first: .*COCO_val2014_000000000002"):
            docs.pope_docs(None)
    finally:
        os.rename(os.path.join(root, "moved.jpg"), os.path.join(root, "pope/val2014/COCO_val2014_000000000002.jpg"))
    monkeypatch.delenv(docs.DATA_ENV)
    assert docs.data_root() == os.path.join(".", "playground", "data", "eval")


def _lines(task: str, texts: list[str], order=None) -> list[dict]:
    ds = getattr(docs, DOCS[task])(None)
    lines = [scoring.answer_line(ds[i], [t]) for i, t in enumerate(texts)]
    return [lines[i] for i in order] if order else lines


# answers, the scorer's number worked by hand
SCORED = {
    # yes / left right, red wrong (LLaVA's rstrip('.').lower())
    "gqa_local": (["Yes.", "Left", "blue"], scoring.gqa_aggregate, 200 / 3),
    # adversarial F1 1, random 2/3, popular 2/3 (answers given out of order: written in question order)
    "pope_local": (["Yes", "No", "Yes, there is", "Yes", "No, not.", "yes"], scoring.pope_aggregate, 700 / 9),
    # soft accuracy: 'stop' is 6 of 10 answers -> 1; 'stop' against ten 'go' -> 0
    "textvqa_local": (["stop", "stop"], scoring.textvqa_aggregate, 50.0),
    # existence: both right -> 100 + 100; artwork: one right -> 50 + 0
    "mme_local": (["Yes", "No", "Yes", "Yes"], scoring.mme_aggregate, 250.0),
    # IMG subset (<image> in the written prompt) = problems 11 (right) and 13 (wrong); 12 is text-only
    "sqa_local": (["A", "B", "B"], scoring.sqa_aggregate, 50.0),
    "mmbench_local": (["B", "B"], scoring.mmbench_aggregate, 50.0),
    "mmbench_cn_local": (["B", "A"], scoring.mmbench_cn_aggregate, 100.0),
}


@pytest.mark.parametrize("task", sorted(SCORED))
def test_aggregations_give_the_scorers_numbers(task, root, tmp_path):
    texts, aggregate, expected = SCORED[task]
    order = list(reversed(range(len(texts))))  # lmms-eval may hand the samples over in any order
    args = SimpleNamespace(output_path=str(tmp_path))
    assert aggregate(_lines(task, texts, order), args) == pytest.approx(expected)
    (answers,) = [p for p in os.listdir(tmp_path / "submissions") if p.endswith("-answers.jsonl")]
    written = [json.loads(x) for x in open(tmp_path / "submissions" / answers, encoding="utf-8")]
    ds = getattr(docs, DOCS[task])(None)
    assert [w["question_id"] for w in written] == [json.loads(d["qid"]) for d in ds]
    assert [w["text"] for w in written] == texts
    assert answers.startswith(task + "-")


def test_partial_runs_are_scored_on_what_was_asked(root, tmp_path):
    """--limit: the first two GQA questions only (both right)."""
    args = SimpleNamespace(output_path=str(tmp_path))
    assert scoring.gqa_aggregate(_lines("gqa_local", ["yes", "left"]), args) == pytest.approx(100.0)


def test_server_and_grader_tasks_write_their_upload_files(root, tmp_path):
    args = SimpleNamespace(output_path=str(tmp_path))
    assert scoring.vqav2_aggregate(_lines("vqav2_local", ["Two.", "A Dog"]), args) is None
    assert scoring.vizwiz_aggregate(_lines("vizwiz_local", ["unanswerable", "Red!"]), args) is None
    assert scoring.mmvet_aggregate(_lines("mmvet_local", ["A long answer.", "Another one"]), args) is None
    files = sorted(os.listdir(tmp_path / "submissions"))

    def load(task, kind):
        (name,) = [f for f in files if f.startswith(task) and f.endswith(kind)]
        return json.load(open(tmp_path / "submissions" / name, encoding="utf-8"))

    assert load("vqav2_local", "-upload.json") == [{"question_id": 5000, "answer": "2"},
                                                   {"question_id": 5001, "answer": "dog"},  # articles dropped
                                                   {"question_id": 6000, "answer": ""}]
    assert load("vizwiz_local", "-upload.json") == [{"image": "img0.jpg", "answer": "unanswerable"},
                                                    {"image": "img1.jpg", "answer": "red"}]
    assert load("mmvet_local", "-mmvet-results.json") == {"v1_0": "A long answer.", "v1_1": "Another one"}


def test_yaml_configs_as_lmms_eval_reads_them(root, tmp_path, monkeypatch):
    pytest.importorskip("lmms_eval", reason="lmms-eval is installed by `make lmms`")
    from lmms_eval.tasks import TaskManager, get_task_dict

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    tm = TaskManager("WARNING", include_path=TASKS_DIR, include_defaults=False)
    assert sorted(tm.all_subtasks) == sorted(TASKS)
    assert "globalcom2_paper" in tm.all_tags
    tasks = get_task_dict(["sqa_local", "mmvet_local", "mmbench_cn_local"], tm)
    want = {"until": [], "max_new_tokens": 128, "temperature": 0.0, "num_beams": 1, "do_sample": False}
    for name, n_docs, max_new in [("sqa_local", 3, 1024), ("mmvet_local", 2, 1024), ("mmbench_cn_local", 2, 1024)]:
        task = tasks[name]
        assert task.config.generation_kwargs == {**want, "max_new_tokens": max_new}
        assert len(task.test_docs()) == n_docs
        doc = task.test_docs()[0]
        assert task.doc_to_text(doc) == doc["message"]
    assert tasks["mmbench_cn_local"].test_docs()[0]["message"].endswith("\n请直接回答选项字母。")
    assert tasks["sqa_local"].test_docs()[0]["prompt"].startswith("<image>\n")  # how the scorer tells IMG
