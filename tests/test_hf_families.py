"""llava.hf on every supported family: keep-all ≡ unpatched, batch ≡ singles, records, errors."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import new_tokens, process

import llava.hf
from llava.compression import build_compressor

FAMILIES = ["hf_llava_next", "hf_onevision", "hf_qwen2_vl", "hf_qwen2_5_vl"]
# per family: three image sizes (w, h) covering different grids (OneVision: one shrunk canvas)
SIZES = {
    "hf_llava_next": [(500, 300), (112, 112), (300, 900)],
    "hf_onevision": [(500, 300), (1000, 1000), (150, 400)],
    "hf_qwen2_vl": [(300, 200), (90, 140), (230, 230)],
    "hf_qwen2_5_vl": [(300, 200), (90, 140), (230, 230)],
}


@pytest.fixture(params=FAMILIES)
def family(request):
    model, processor = request.getfixturevalue(request.param)
    return request.param, model, processor


def keep_all(name: str):
    """A compressor that keeps every token (through the whole compression pipeline)."""
    if "qwen" in name:
        return build_compressor("fastervlm", retention_ratio=1.0)
    return build_compressor("globalcom2", retention_ratio=1.0, allocation="uniform")


def test_keep_all_equals_the_unpatched_model(family):
    name, model, processor = family
    inputs = process(model, processor, SIZES[name][:1])
    with torch.no_grad():
        base = model(**inputs).logits
        for comp in (None, build_compressor("none"), keep_all(name)):
            kwargs, records = llava.hf.prepare_inputs(model, comp, **inputs)
            out = model(**kwargs).logits
            if comp is None or comp.name == "none":
                assert kwargs.keys() == dict(inputs).keys() and torch.equal(out, base)
            assert out.shape == base.shape
            assert (out - base).abs().max().item() <= 1e-5
            assert torch.equal(records[0].kept, torch.arange(records[0].layout.num_tokens()))
            assert records[0].info()["tokens"] == int((inputs["input_ids"] == model.config.image_token_id).sum())


def test_keep_all_generation_of_a_padded_batch_is_the_unpatched_one(family):
    name, model, processor = family
    inputs = process(model, processor, SIZES[name])
    gen = dict(max_new_tokens=3, do_sample=False)
    with torch.no_grad():
        base = model.generate(**inputs, **gen)
        out = llava.hf.generate(model, keep_all(name), **inputs, **gen)
        off = llava.hf.generate(model, None, **inputs, **gen)
    assert torch.equal(off, base)
    assert torch.equal(out, base)


def test_batch_of_three_equals_three_single_runs(family):
    name, model, processor = family
    comp = build_compressor("globalcom2", retention_ratio=0.3)
    sizes = SIZES[name]
    questions = ["What is it?", "Describe the picture in detail.", "Color?"]
    gen = dict(max_new_tokens=3, do_sample=False)
    eos = model.generation_config.eos_token_id
    with torch.no_grad():
        batch = process(model, processor, sizes, questions)
        kwargs, records = llava.hf.prepare_inputs(model, comp, **batch)
        logits = model(**kwargs).logits[:, -1]
        out = llava.hf.generate(model, comp, **batch, **gen)
        L = batch["input_ids"].shape[1]
        for i, (size, q) in enumerate(zip(sizes, questions)):
            one = process_single(model, processor, size, q, seed=i)
            kw1, rec1 = llava.hf.prepare_inputs(model, comp, **one)
            assert torch.equal(rec1[0].kept, records[i].kept)
            torch.testing.assert_close(model(**kw1).logits[0, -1], logits[i], atol=1e-4, rtol=1e-4)
            single = llava.hf.generate(model, comp, **one, **gen)
            assert new_tokens(single, one["input_ids"].shape[1], eos)[0] == new_tokens(out[i : i + 1], L, eos)[0]


def process_single(model, processor, size, question, seed):
    from hf_helpers import prompt_for, random_image

    return processor(images=[random_image(*size, seed=seed)], text=[prompt_for(model, question)], return_tensors="pt")


def test_generate_returns_the_original_prompt_then_new_tokens(family):
    name, model, processor = family
    inputs = process(model, processor, SIZES[name][:2])
    out, records = llava.hf.generate(model, build_compressor("globalcom2", retention_ratio=0.1), **inputs,
                                     max_new_tokens=3, min_new_tokens=3, return_records=True)
    L = inputs["input_ids"].shape[1]
    assert out.shape == (2, L + 3)
    assert torch.equal(out[:, :L], inputs["input_ids"])
    info = records[0].info()
    assert info["tokens"] < info["tokens_uncompressed"]
    assert records[0].kept.shape[0] == info["tokens"]
    assert bool((records[0].kept.diff() > 0).all())  # sequence order


# ----------------------------------------------------------------------------- errors


def test_unsupported_model_class_names_the_supported_ones(tiny):
    with pytest.raises(TypeError, match="LlavaNextForConditionalGeneration, LlavaOnevisionForConditionalGeneration, "
                                        "Qwen2VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration; "
                                        "got LlavaLlamaForCausalLM"):
        llava.hf.prepare_inputs(tiny[1], None, input_ids=torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("name", ["hf_onevision", "hf_qwen2_vl"])
def test_cls_free_towers(request, name):
    model, processor = request.getfixturevalue(name)
    inputs = process(model, processor, SIZES[name][:1])
    adapter = llava.hf.adapter_for(model)
    # the default [CLS] score becomes neg_cos; an explicit [CLS] score is an error
    assert adapter.score_request(build_compressor("globalcom2")).kind == "neg_cos"
    assert adapter.score_request(build_compressor("fastervlm")).kind == "neg_cos"
    with pytest.raises(ValueError, match="no \\[CLS\\] token, so score='cls_logits'"):
        llava.hf.prepare_inputs(model, build_compressor("fastervlm", score="cls_logits"), **inputs)
    with pytest.raises(ValueError, match="layout='reference' is not available"):
        llava.hf.prepare_inputs(model, build_compressor("globalcom2", layout="reference"), **inputs)
    for peer in ("visionzip", "hired", "prumerge", "prumerge_plus"):  # defined by [CLS] attention and keys
        with pytest.raises(ValueError, match=f"{peer} reads the \\[CLS\\] attention and keys .* no \\[CLS\\] token"):
            llava.hf.prepare_inputs(model, build_compressor(peer), **inputs)


def test_default_scores_match_neg_cos_explicitly(hf_onevision):
    model, processor = hf_onevision
    inputs = process(model, processor, [(500, 300)])
    with torch.no_grad():
        a = llava.hf.prepare_inputs(model, build_compressor("globalcom2", retention_ratio=0.2), **inputs)[1][0]
        b = llava.hf.prepare_inputs(model, build_compressor("globalcom2", retention_ratio=0.2, score="neg_cos"), **inputs)[1][0]
    assert torch.equal(a.kept, b.kept)


def test_wrong_placeholder_count_is_a_clear_error(hf_llava_next):
    model, processor = hf_llava_next
    inputs = dict(process(model, processor, [(500, 300)]))
    inputs["input_ids"] = inputs["input_ids"].clone()
    inputs["input_ids"][0, -2] = model.config.image_token_id  # one placeholder too many
    with pytest.raises(ValueError, match=r"hold \d+ placeholder tokens \(id \d+\) but the 1 image\(s\) call for \d+"):
        llava.hf.prepare_inputs(model, build_compressor("globalcom2"), **inputs)


@pytest.mark.parametrize("build", ["tiny_onevision", "tiny_qwen2_5_vl"])
def test_half_precision_keeps_the_dtype_and_the_hosts_tokens(build):
    from hf_helpers import host_image_tokens

    import llava.testing.tiny_hf as tiny_hf

    model, processor = getattr(tiny_hf, build)()
    model = model.to(torch.bfloat16)
    inputs = process(model, processor, [(1000, 1000) if "onevision" in build else (300, 200)])
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    with torch.no_grad():
        full = host_image_tokens(model, inputs)[0]
        kwargs, records = llava.hf.prepare_inputs(model, build_compressor("globalcom2", retention_ratio=0.25), **inputs)
        logits = model(**kwargs).logits
    assert records[0].tokens.dtype == torch.bfloat16 and logits.dtype == torch.bfloat16
    assert torch.equal(records[0].tokens, full[records[0].kept])
    assert torch.isfinite(logits.float()).all()


# The methods whose scorers read vision weights outside the layers' forward, per family.
OFFLOAD_METHODS = {
    "hf_llava_next": [dict(name="globalcom2"), dict(name="hired"), dict(name="prumerge")],
    "hf_onevision": [dict(name="globalcom2", score="attn_received")],
    "hf_qwen2_vl": [dict(name="globalcom2", score="attn_received")],
}


@pytest.mark.filterwarnings("ignore:The following device_map keys do not match any submodules:UserWarning")
@pytest.mark.parametrize("name", list(OFFLOAD_METHODS))
def test_offloaded_vision_tower_gives_the_same_tokens(name, request, tmp_path):
    """A ``device_map`` that puts the vision tower and projector on disk (accelerate then loads
    each module's weights only during its own forward): the scorers, the tower's input placement
    and ``image_newline`` still see real weights, and the tokens equal the in-memory model's."""
    model, processor = request.getfixturevalue(name)
    model.save_pretrained(tmp_path / "ckpt")
    inner = dict(model.model.named_children())
    on_disk = {"vision_tower", "visual", "multi_modal_projector"}
    device_map = {f"model.{n}": "disk" if n in on_disk else "cpu" for n in inner}
    device_map.update({f"model.{p}": "cpu" for p, _ in model.model.named_parameters(recurse=False)})
    device_map["lm_head"] = "cpu"
    offloaded = type(model).from_pretrained(tmp_path / "ckpt", device_map=device_map, dtype=model.dtype,
                                            offload_folder=str(tmp_path / "offload"))
    tower = offloaded.model.vision_tower if "qwen" not in name else offloaded.model.visual
    assert next(tower.parameters()).device.type == "meta"  # really offloaded
    inputs = process(model, processor, SIZES[name][:1])
    gen = dict(max_new_tokens=3, do_sample=False)
    for options in OFFLOAD_METHODS[name]:
        comp = build_compressor(**options, retention_ratio=0.25)
        expected, ref = llava.hf.generate(model, comp, **inputs, **gen, return_records=True)
        got, recs = llava.hf.generate(offloaded, comp, **inputs, **gen, return_records=True)
        assert torch.equal(got, expected), options
        assert torch.equal(recs[0].kept, ref[0].kept)
