"""Fixed-count ("exact") budgets and llava.hf.install: the processor emits exactly the count the
model produces for every image size, the stock generate/forward then equal llava.hf's own
path, and uninstall restores both instances."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import process, prompt_for, random_image

import llava.hf
from llava.compression import build_compressor

FAMILIES = ["hf_llava_next", "hf_onevision", "hf_qwen2_vl", "hf_qwen2_5_vl"]
# many (w, h): tiny, extreme aspect ratios, every grid, OneVision shrinks
MANY_SIZES = [(20, 20), (1000, 600), (600, 1000), (112, 112), (224, 112), (1000, 300), (300, 1000), (57, 400),
              (1300, 1300), (900, 450), (450, 900), (777, 333), (160, 1200), (640, 480)]
PAIR = [(500, 300), (300, 700)]


@pytest.fixture(params=FAMILIES)
def family(request):
    model, processor = request.getfixturevalue(request.param)
    return request.param, model, processor


@pytest.fixture
def installed(family):
    """The family's model and processor with GlobalCom² (exact budgets) installed; always
    uninstalled afterwards."""
    name, model, processor = family
    comp = build_compressor("globalcom2", retention_ratio=0.2, budget="exact")
    llava.hf.install(model, processor, comp)
    try:
        yield name, model, processor, comp
    finally:
        if llava.hf.installed(model) is not None:
            llava.hf.uninstall(model, processor)


def test_placeholders_equal_what_the_model_produces_for_every_size(installed):
    name, model, processor, comp = installed
    image_id = model.config.image_token_id
    adapter = llava.hf.adapter_for(model)
    g = torch.Generator().manual_seed(0)
    for i, size in enumerate(MANY_SIZES):
        inputs = processor(images=[random_image(*size, seed=i)], text=[prompt_for(model, "Hi")], return_tensors="pt")
        emitted = int((inputs["input_ids"] == image_id).sum())
        layout = adapter.processed_layout(inputs, 0, processor)
        assert layout == adapter.image_layouts(inputs)[0]  # the processor's geometry is the model's
        n, full = layout.tokens_per_view, layout.num_tokens()
        assert emitted == comp.token_count(layout) < full, size
        if layout.n_crops:  # thumbnail ⌊N·R⌋ + crops ⌊R·ΣN_j⌋ + one newline per canvas row
            assert emitted == int(n * 0.2) + int(layout.canvas_tokens * 0.2) + layout.visible_shape[0]
        # any scores pack exactly that many tokens
        scores = torch.randn(layout.n_views, n, generator=g)
        packed = comp.compress(torch.zeros(layout.n_views, n, 1), torch.zeros(1), layout, scores)
        assert packed.index.shape[0] == emitted, size
        if i % 4 == 0:  # and so does the model, on its own vision features
            kwargs = {k: v for k, v in inputs.items() if k in ("pixel_values", "image_sizes", "image_grid_thw", "batch_num_images")}
            with torch.no_grad():
                tokens = model.model.get_image_features(**kwargs).pooler_output
            assert len(tokens) == 1 and tokens[0].shape[0] == emitted, size


def test_stock_generate_equals_llava_hf_generate(installed):
    name, model, processor, comp = installed
    compressed = process(model, processor, PAIR)  # placeholders already at the compressed count
    gen = dict(max_new_tokens=4, do_sample=False)
    with torch.no_grad():
        stock = model.generate(**compressed, **gen)
        stock_logits = model(**compressed).logits
    llava.hf.uninstall(model, processor)
    full = process(model, processor, PAIR)
    with torch.no_grad():
        ours = llava.hf.generate(model, comp, **full, **gen)
        kwargs, _ = llava.hf.prepare_inputs(model, comp, **full)
        our_logits = model(**kwargs).logits
    Lc, Lf = compressed["input_ids"].shape[1], full["input_ids"].shape[1]
    assert torch.equal(stock[:, Lc:], ours[:, Lf:])
    for b in range(2):
        got = stock_logits[b][compressed["attention_mask"][b].bool()]
        want = our_logits[b][kwargs["attention_mask"][b].bool()]
        if "qwen" not in name:  # LLaVA: the stock forward numbers a left-padded row from 0
            got, want = got[-1:], want[-1:]
        assert got.shape == want.shape and (got - want).abs().max().item() <= 1e-4


def test_multi_image_prompts_under_install(hf_qwen2_vl):
    """Two images in one Qwen prompt, a text-only neighbour row: the installed get_rope_index
    gives every survivor its full-grid position."""
    model, processor = hf_qwen2_vl
    comp = build_compressor("globalcom2", retention_ratio=0.3)
    imgs = [random_image(200, 150, seed=1), random_image(120, 260, seed=2)]
    texts = [prompt_for(model, "Compare them.", images=2), prompt_for(model, "Just text, no picture.", images=0)]
    gen = dict(max_new_tokens=4, do_sample=False)
    full = processor(images=imgs, text=texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        ours = llava.hf.generate(model, comp, **full, **gen)
    llava.hf.install(model, processor, comp)
    try:
        short = processor(images=imgs, text=texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            stock = model.generate(**short, **gen)
    finally:
        llava.hf.uninstall(model, processor)
    assert torch.equal(stock[:, short["input_ids"].shape[1] :], ours[:, full["input_ids"].shape[1] :])


def test_uninstall_restores_model_and_processor(family):
    name, model, processor = family
    before = process(model, processor, PAIR[:1])
    with torch.no_grad():
        base = model(**before).logits
    llava.hf.install(model, processor, build_compressor("fastervlm", retention_ratio=0.25, budget="exact"))
    short = process(model, processor, PAIR[:1])
    assert short["input_ids"].shape[1] < before["input_ids"].shape[1]
    assert "get_image_features" in vars(model.model) and "replace_image_token" in vars(processor)
    llava.hf.uninstall(model, processor)
    assert "get_image_features" not in vars(model.model) and "get_rope_index" not in vars(model.model)
    assert "replace_image_token" not in vars(processor)
    after = process(model, processor, PAIR[:1])
    assert torch.equal(after["input_ids"], before["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**after).logits, base)


def test_install_errors(hf_llava_next, hf_qwen2_vl):
    model, processor = hf_llava_next
    with pytest.raises(ValueError, match="budget='exact'"):
        llava.hf.install(model, processor, build_compressor("globalcom2"))
    with pytest.raises(ValueError, match="nothing to install"):
        llava.hf.install(model, processor, None)
    comp = build_compressor("globalcom2", budget="exact")
    llava.hf.install(model, processor, comp)
    try:
        assert llava.hf.installed(model) is comp
        with pytest.raises(RuntimeError, match="already installed"):
            llava.hf.install(model, processor, comp)
        with pytest.raises(RuntimeError, match="not installed together"):
            llava.hf.uninstall(model, hf_qwen2_vl[1])
    finally:
        llava.hf.uninstall(model, processor)
    with pytest.raises(RuntimeError, match="not installed"):
        llava.hf.uninstall(model, processor)
    # Qwen's single views have a fixed count under either budget.
    qwen, qproc = hf_qwen2_vl
    llava.hf.install(qwen, qproc, build_compressor("globalcom2", retention_ratio=0.3))
    llava.hf.uninstall(qwen, qproc)


def test_install_on_a_converted_checkpoint_and_its_stock_processor(converted_llava_next):
    """``llava.convert to-hf`` output, loaded with AutoProcessor: the stock pipeline runs
    compressed and decodes what llava.hf.generate decodes on the uncompressed prompt."""
    from transformers import AutoProcessor

    model = converted_llava_next
    processor = AutoProcessor.from_pretrained(model.name_or_path)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
    image = random_image(1000, 600, seed=4)
    comp = build_compressor("globalcom2", retention_ratio=0.25, budget="exact")
    gen = dict(max_new_tokens=4, do_sample=False)
    full = processor(images=image, text=prompt, return_tensors="pt")
    with torch.no_grad():
        ours = llava.hf.generate(model, comp, **full, **gen)
    llava.hf.install(model, processor, comp)
    try:
        short = processor(images=image, text=prompt, return_tensors="pt")
        layout = llava.hf.adapter_for(model).processed_layout(short, 0, processor)
        assert int((short["input_ids"] == model.config.image_token_id).sum()) == comp.token_count(layout)
        with torch.no_grad():
            stock = model.generate(**short, **gen)
    finally:
        llava.hf.uninstall(model, processor)
    assert torch.equal(stock[:, short["input_ids"].shape[1] :], ours[:, full["input_ids"].shape[1] :])
