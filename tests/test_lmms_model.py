"""``llava_gc2`` in process: lmms-eval's request tuples in, our tree's answers and visual-token
records out (per sample and per run), checked against the tree itself and the AnyRes geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("lmms_eval", reason="lmms-eval is installed by `make lmms` (and `make test`)")

from lmms_eval.api.instance import GenerationResult, Instance  # noqa: E402
from lmms_eval.models.model_utils import gen_metrics  # noqa: E402

from llava.compression import build_compressor  # noqa: E402
from llava.mm_utils import anyres_token_count, process_images  # noqa: E402

V16 = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
SIZES = [(100, 80), (80, 100), (60, 60)]
GEN = {"until": [], "max_new_tokens": 4, "temperature": 0, "do_sample": False}


def _image(size, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


DOCS = [{"prompt": f"What is in picture {i}?\nAnswer the question using a single word or phrase.",
         "image": _image(s, i)} for i, s in enumerate(SIZES)] + [{"prompt": "Say something.", "image": None}]


def _visual(doc):
    return [doc["image"]] if doc["image"] is not None else []


def requests(lm, docs=DOCS, gen=GEN, task="t"):
    lm.task_dict = {task: {"test": docs}}
    return [Instance("generate_until", (d["prompt"], dict(gen), _visual, i, task, "test"), i,
                     {"task": task, "doc_id": i, "repeats": 1}) for i, d in enumerate(docs)]


@pytest.fixture(scope="module")
def gc2(tiny_ckpt):
    from llava.lmms.llava_gc2 import LlavaGC2

    return LlavaGC2(pretrained=tiny_ckpt, device="cpu", compression="globalcom2", retention_ratio=0.25, tau=10)


def test_defaults_and_resolved_config(gc2):
    from llava.lmms.llava_gc2 import LlavaGC2

    assert gc2.conv_template == "vicuna_v1" and gc2.batch_size == 1 and str(gc2.device) == "cpu"
    assert gc2.compressor == build_compressor("globalcom2", retention_ratio=0.25)
    assert gc2.model.compressor is gc2.compressor
    assert gc2.compression == {"name": "globalcom2", "layout": "faithful", "crop_order": "forward", "retention_ratio": 0.25,
                               "temperature": 10.0,
                               "alpha": 0.5, "allocation": "softmax_sum", "score": "cls_logits", "score_layer": -1,
                               "budget": "adaptive"}
    import inspect

    assert inspect.signature(LlavaGC2).parameters["compression"].default == "none"


def test_unknown_or_misplaced_arguments_raise_before_loading(tiny_ckpt):
    from llava.lmms.llava_gc2 import LlavaGC2

    with pytest.raises(TypeError, match=r"unknown model argument\(s\) temprature"):
        LlavaGC2(pretrained=tiny_ckpt, temprature=0.2)
    with pytest.raises(ValueError, match="compression=fastervlm does not take alpha"):
        LlavaGC2(pretrained=tiny_ckpt, compression="fastervlm", alpha=0.5)
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got 'auto'"):
        LlavaGC2(pretrained=tiny_ckpt, batch_size="auto")
    with pytest.raises(ValueError, match="dtype must be auto or one of float16"):
        LlavaGC2(pretrained=tiny_ckpt, dtype="float8")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        LlavaGC2(pretrained=tiny_ckpt, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            LlavaGC2(pretrained=tiny_ckpt, device="cuda:0")


def test_answers_and_records_match_the_tree(gc2, tiny):
    """Every answer is our tree's own greedy answer to the drivers' prompt; the sample record
    holds the tree's kept-token counts and the AnyRes count as the uncompressed figure."""
    from llava.eval.generation import generate_answers

    tokenizer, model, processor, _ = tiny
    gen_metrics.reset_logged_metrics()
    out = gc2.generate_until(requests(gc2))
    assert all(isinstance(r, GenerationResult) for r in out)
    comp = build_compressor("globalcom2", retention_ratio=0.25)
    direct = generate_answers(model, tokenizer, processor, [d["prompt"] for d in DOCS], [_visual(d) for d in DOCS],
                              conv_mode="vicuna_v1", max_new_tokens=4, compressor=comp)
    with torch.no_grad():
        kept = [model.images_to_tokens(process_images([d["image"]], processor, model.config), [d["image"].size],
                                       compressor=comp)[0] for d in DOCS[:3]]
    assert [r.text for r in out] == [a.text for a in direct]
    for r, d, k in zip(out, DOCS, kept):
        rec = r.token_counts.to_dict()
        assert rec["visual_tokens"] == k.shape[0] == rec["images"][0]["tokens"]
        assert rec["visual_tokens_uncompressed"] == anyres_token_count(d["image"].size, V16)
        assert rec["visual_tokens"] < 0.35 * rec["visual_tokens_uncompressed"]
        assert rec["compression"] == gc2.compression
        assert rec["output_tokens"] <= 4
    text_only = out[3].token_counts.to_dict()
    assert (text_only["visual_tokens"], text_only["visual_tokens_uncompressed"], text_only["images"]) == (0, 0, [])
    # input_tokens = the prompt's text tokens + the kept visual tokens (the LLM's prefill length)
    from llava.conversation import build_chat_prompt
    from llava.mm_utils import tokenizer_image_token

    n_text = len(tokenizer_image_token(build_chat_prompt(DOCS[0]["prompt"], model.config, "vicuna_v1", True),
                                       tokenizer)) - 1
    assert out[0].token_counts.input_tokens == n_text + out[0].token_counts.visual["visual_tokens"]
    # the run's figures: kept / uncompressed summed over the images
    recs = [r.token_counts.to_dict() for r in out[:3]]
    summary = gen_metrics.summarize_logged_metrics()
    ratio = sum(r["visual_tokens"] for r in recs) / sum(r["visual_tokens_uncompressed"] for r in recs)
    assert summary["avg_visual_token_ratio"] == pytest.approx(ratio)
    assert summary["avg_visual_token_ratio/t"] == pytest.approx(ratio)
    assert summary["avg_visual_tokens_per_image"] == pytest.approx(sum(r["visual_tokens"] for r in recs) / 3)
    assert summary["total_gen_tokens"] == sum(r.token_counts.output_tokens for r in out)


def test_batches_give_the_same_answers_and_stop_strings_cut(gc2):
    single = gc2.generate_until(requests(gc2))
    gc2.batch_size_per_gpu = 3
    try:
        batched = gc2.generate_until(requests(gc2))
    finally:
        gc2.batch_size_per_gpu = 1
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.token_counts.to_dict() for r in batched] == [r.token_counts.to_dict() for r in single]
    cut = gc2.generate_until(requests(gc2, gen={**GEN, "until": [" "]}))
    assert [r.text for r in cut] == [r.text.split(" ")[0] for r in single]


def test_keep_all_reports_equal_counts(tiny_ckpt):
    from llava.lmms.llava_gc2 import LlavaGC2

    lm = LlavaGC2(pretrained=tiny_ckpt, device="cpu")
    out = lm.generate_until(requests(lm, DOCS[:2]))
    for r in out:
        rec = r.token_counts.to_dict()
        assert rec["visual_tokens"] == rec["visual_tokens_uncompressed"] > 0
        assert rec["compression"] == {"name": "none"}


def test_non_image_visuals_are_refused(gc2):
    docs = [{"prompt": "q", "image": "clip.mp4"}]
    with pytest.raises(TypeError, match=r"llava_gc2 takes images; task t, document 0 gave a video \('clip.mp4'\) — "
                                        "videos go to llava_onevision_gc2, qwen2_vl_gc2, qwen2_5_vl_gc2"):
        gc2.generate_until(requests(gc2, docs))
    with pytest.raises(TypeError, match="llava_gc2 takes images; task t, document 0 gave a dict"):
        gc2.generate_until(requests(gc2, [{"prompt": "q", "image": {"array": [0.0]}}]))
    with pytest.raises(NotImplementedError, match="loglikelihood"):
        gc2.loglikelihood([])


def test_an_overlong_prompt_stops_the_run_naming_the_document(gc2, monkeypatch):
    from llava.errors import PromptTooLongError

    def too_long(*args, **kwargs):
        raise PromptTooLongError(1, 5000, 4096)

    monkeypatch.setattr(gc2.model, "generate", too_long)
    gc2.batch_size_per_gpu = 2
    try:
        with pytest.raises(ValueError, match="task t, document 1: the prompt is 5000 tokens long .* context of 4096"):
            gc2.generate_until(requests(gc2))
    finally:
        gc2.batch_size_per_gpu = 1


def test_registered_with_lmms_eval():
    from lmms_eval.models import get_model

    from llava.lmms.llava_gc2 import LlavaGC2

    assert get_model("llava_gc2") is LlavaGC2
    assert torch.is_grad_enabled()  # nothing here switched autograd off for the rest of the suite
