"""The transformers-native plug-in models in process, one per family, on tiny checkpoints
saved to disk: their answers are :func:`llava.hf.generate`'s (the unpatched model's with
``compression=none``), batches equal singles, and the logged counts are the processor's own
placeholder counts before and the kept tokens after."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("lmms_eval", reason="lmms-eval is installed by `make lmms` (and `make test`)")

from hf_helpers import random_image  # noqa: E402
from lmms_eval.api.instance import Instance  # noqa: E402

import llava.hf  # noqa: E402
from llava.compression import build_compressor  # noqa: E402
from llava.testing.tiny_hf import LLAVA_CHAT_TEMPLATE, QWEN_CHAT_TEMPLATE  # noqa: E402

FAMILIES = {  # lmms-eval name: (fixture, class, chat template, settings a real processor_config.json holds)
    "llava_hf_gc2": ("hf_llava_next", "LlavaNextGC2", LLAVA_CHAT_TEMPLATE, {}),
    "llava_onevision_gc2": ("hf_onevision", "LlavaOnevisionGC2", LLAVA_CHAT_TEMPLATE,
                            {"num_image_tokens": 64, "vision_feature_select_strategy": "full",
                             "vision_aspect_ratio": "anyres_max_9"}),
    "qwen2_vl_gc2": ("hf_qwen2_vl", "Qwen2VLGC2", QWEN_CHAT_TEMPLATE, {}),
    "qwen2_5_vl_gc2": ("hf_qwen2_5_vl", "Qwen2_5_VLGC2", QWEN_CHAT_TEMPLATE, {}),
}
SIZES = [(200, 150), (150, 200), (120, 120)]
DOCS = [{"text": f"What is in picture {i}?", "image": random_image(w, h, seed=i)} for i, (w, h) in enumerate(SIZES)]
GEN = {"until": [], "max_new_tokens": 4, "temperature": 0, "do_sample": False}


def save_checkpoint(model, processor, path, settings: dict) -> str:
    """A checkpoint folder as published ones are (the tiny processors are built without their
    video processor, and so saved under another class name and without their settings)."""
    model.save_pretrained(path)
    processor.save_pretrained(path)
    cfg_file = path / "processor_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["processor_class"] = cfg["processor_class"].removeprefix("ImageOnly")
    cfg.update(settings)
    cfg_file.write_text(json.dumps(cfg))
    return str(path)


def requests(lm, docs=DOCS, gen=GEN):
    lm.task_dict = {"t": {"test": docs}}
    return [Instance("generate_until", (d["text"], dict(gen), lambda d: [d["image"]], i, "t", "test"), i,
                     {"task": "t", "doc_id": i, "repeats": 1}) for i, d in enumerate(docs)]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    fixture, cls_name, template, settings = FAMILIES[request.param]
    model, processor = request.getfixturevalue(fixture)
    path = save_checkpoint(model, processor, tmp_path_factory.mktemp(request.param), settings)
    (tmp_path_factory.getbasetemp() / f"{request.param}.jinja").write_text(template)
    return request.param, cls_name, path, str(tmp_path_factory.getbasetemp() / f"{request.param}.jinja")


def _load(family, **args):
    from llava.lmms import hf

    name, cls_name, path, template = family
    return getattr(hf, cls_name)(pretrained=path, device="cpu", chat_template=template, **args)


def test_answers_are_llava_hf_generate_and_counts_the_processors(family):
    lm = _load(family, compression="globalcom2", retention_ratio=0.25, batch_size=2)
    out = lm.generate_until(requests(lm))
    comp = build_compressor("globalcom2", retention_ratio=0.25)
    assert lm.compressor == comp
    for r, doc in zip(out, DOCS):  # each alone, straight through llava.hf
        inputs = lm.processor(text=[lm.prompt(doc["text"], ["image"])], images=[doc["image"]], return_tensors="pt")
        with torch.inference_mode():  # as the plug-in runs it
            ids, records = llava.hf.generate(lm.model, comp, return_records=True, **inputs, max_new_tokens=4,
                                             do_sample=False)
        want = lm.processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()
        assert r.text == want
        counts = r.token_counts.to_dict()
        placeholders = int((inputs["input_ids"] == lm.adapter.image_token_id).sum())
        assert counts["visual_tokens_uncompressed"] == placeholders == records[0].info()["tokens_uncompressed"]
        assert counts["visual_tokens"] == records[0].info()["tokens"] < placeholders
        assert counts["input_tokens"] == inputs["input_ids"].shape[1] - placeholders + counts["visual_tokens"]
        # the config as it runs: CLS-free towers (all but LLaVA-NeXT's CLIP) score by neg_cos
        score = "cls_logits" if family[0] == "llava_hf_gc2" else "neg_cos"
        assert counts["compression"] == {**comp.to_dict(), "score": score} == llava.hf.resolved_config(lm.model, comp)


def test_no_compression_is_the_stock_model(family):
    lm = _load(family)
    out = lm.generate_until(requests(lm, DOCS[:2]))
    for r, doc in zip(out, DOCS):
        inputs = lm.processor(text=[lm.prompt(doc["text"], ["image"])], images=[doc["image"]], return_tensors="pt")
        with torch.inference_mode():
            ids = lm.model.generate(**inputs, max_new_tokens=4, do_sample=False)
        assert r.text == lm.processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:],
                                                   skip_special_tokens=True)[0].strip()
        counts = r.token_counts.to_dict()
        assert counts["visual_tokens"] == counts["visual_tokens_uncompressed"] > 0
        assert counts["compression"] == {"name": "none"}


def test_arguments_are_checked_at_load(family):
    name = family[0]
    with pytest.raises(TypeError, match=r"unknown model argument\(s\) conv_template"):
        _load(family, conv_template="vicuna_v1")
    if name != "llava_hf_gc2":  # the release's packing exists for LLaVA-NeXT only
        with pytest.raises(ValueError, match="layout='reference' is not available"):
            _load(family, compression="globalcom2", layout="reference")


def test_videos_are_refused_where_they_cannot_be_read(family, tmp_path):
    """LLaVA-NeXT takes no video; a video model's checkpoint saved without video processor
    settings (as these are) takes images only. Both say so before any work."""
    lm = _load(family)
    docs = [{"text": "What moves?", "image": str(tmp_path / "clip.mp4")}]
    if family[0] == "llava_hf_gc2":
        match = ("llava_hf_gc2 takes images; task t, document 0 gave a video .*clip.mp4'.* videos go to "
                 "llava_onevision_gc2, qwen2_vl_gc2, qwen2_5_vl_gc2")
        with pytest.raises(TypeError, match=match):
            lm.generate_until(requests(lm, docs))
    else:
        assert getattr(lm.processor, "video_processor", None) is None
        with pytest.raises(ValueError, match="task t, document 0: .* holds no video processor settings .* images only"):
            lm.generate_until(requests(lm, docs))


def test_registered_with_lmms_eval():
    from lmms_eval.models import get_model

    from llava.lmms import hf

    for name, (_, cls_name, _, _) in FAMILIES.items():
        assert get_model(name) is getattr(hf, cls_name)
