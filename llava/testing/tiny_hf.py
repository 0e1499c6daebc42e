"""Tiny random transformers VLMs (and their processors) for tests and the demo — built from
transformers' own config classes, nothing downloaded.

``tiny_llava_next(image_size=112)``, ``tiny_onevision(image_size=112)``, ``tiny_qwen2_vl()``
and ``tiny_qwen2_5_vl()`` each return ``(model, processor)``: the real token geometry scaled
down (views of ``image_size``/14 tokens per side — pass 336 for LLaVA-NeXT's 24, 384 for
OneVision's 27 — the pinpoints, unpadding and the ``anyres_max_9`` shrink; Qwen's 14-px
patches, 2×2 merge and, for 2.5, window attention), tiny widths and depths, and weights drawn wider than transformers'
init so attention and scores are far from uniform. The processors are transformers' own
classes built locally; the OneVision and Qwen ones without their video processor, which needs
torchvision (:func:`image_only`), and with :class:`llava.hf.video.VideoProcessor` in its place
(the image processor's size settings, so a video frame and an image go through the same resize).
"""

from __future__ import annotations

import torch

from llava.hf.processors import image_only  # noqa: F401  (re-exported: tests and the demo use it)

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
LLAVA_SPECIALS = ["<s>", "</s>", "<image>", "<video>", "<|im_start|>", "<|im_end|>"]
#: LLaVA-NeXT v1.6 pinpoints as transformers lists them, (height, width).
V16_PINPOINTS_HW = [[672, 336], [336, 672], [672, 672], [336, 1008], [1008, 336]]

_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "USER: ASSISTANT: What is shown in the image? Describe the picture in detail.",
    "system user assistant Answer the question using a single word or phrase.",
    "red green blue yellow black white dog cat person car tree sky table sign text 0 1 2 3",
]


def build_tokenizer(specials: list[str], vocab_size: int = 320, pad: str = "<|endoftext|>"):
    """A small byte-level BPE tokenizer whose ``specials`` are single tokens (left padding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", *specials], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token=pad, padding_side="left",
        additional_special_tokens=specials,
    )


def spread_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraw every matrix as ``N(0, (0.5/√fan_in)²)`` and newline vectors as ``N(0, 1)``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / p[0].numel() ** 0.5))
            elif name.endswith("image_newline"):
                p.copy_(torch.randn(p.shape, generator=gen))
    return model.eval()


def _text_config(vocab: int, **extra) -> dict:
    return dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768, **extra)


def _finish(model, tokenizer, eos: str, seed: int):
    spread_weights(model, seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(eos)
    model.generation_config.do_sample = False
    return model


def tiny_llava_next(image_size: int = 112, seed: int = 0):
    """LLaVA-NeXT: CLIP views of ``image_size``/14 tokens per side (24 at the real 336, [CLS]
    dropped), the v1.6 pinpoints scaled to ``image_size``, Llama."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tok = build_tokenizer(LLAVA_SPECIALS, pad="<unk>")
    pins = [[h * image_size // 336, w * image_size // 336] for h, w in V16_PINPOINTS_HW]
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                              image_size=image_size, patch_size=14, projection_dim=16)
    config = LlavaNextConfig(
        vision_config=vision, text_config=LlamaConfig(**_text_config(len(tok))),
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pins,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    model = _finish(LlavaNextForConditionalGeneration(config), tok, "</s>", seed)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pins,
    )
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
    return model, processor


def tiny_onevision(image_size: int = 112, seed: int = 0):
    """LLaVA-OneVision: SigLIP views of ``image_size``/14 tokens per side (27 at 384), pinpoints
    up to 6×6 crops, ``anyres_max_9``, Qwen2 LLM."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    tok = build_tokenizer(LLAVA_SPECIALS, pad="<unk>")
    side = image_size // 14
    pins = [[image_size * i, image_size * j] for i in range(1, 7) for j in range(1, 7)]
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                                image_size=image_size, patch_size=14, vision_use_head=False)
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=Qwen2Config(**_text_config(len(tok))),
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pins,
    )
    model = _finish(LlavaOnevisionForConditionalGeneration(config), tok, "<|im_end|>", seed)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": image_size, "width": image_size}, crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pins,
    )
    processor = image_only(LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tok, num_image_tokens=side * side,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
    )
    return model, _with_videos(processor, "onevision", size={"height": image_size, "width": image_size})


def _with_videos(processor, family: str, **settings):
    from llava.hf.video import VideoProcessor, with_video_processor

    return with_video_processor(processor, VideoProcessor(family, **settings))


def _qwen_processor(processor_class, tok, max_tokens: int):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * max_tokens)
    processor = image_only(processor_class)(image_processor=image_processor, tokenizer=tok)
    return _with_videos(processor, "qwen2_vl", min_pixels=28 * 28 * 4, max_pixels=28 * 28 * max_tokens)


def _qwen_token_ids(tok) -> dict:
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    return ids


def _qwen_text_extra(tok) -> dict:
    """M-RoPE sections for head_dim 16, and the tokenizer's own special ids."""
    return dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id)


def tiny_qwen2_vl(seed: int = 0, max_tokens: int = 96):
    """Qwen2-VL: 14-px patches, 2×2 merge, dynamic resolution (≤ ``max_tokens`` LLM tokens per image)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tok = build_tokenizer(QWEN_SPECIALS)
    config = Qwen2VLConfig(
        text_config=_text_config(len(tok), **_qwen_text_extra(tok)),
        vision_config=dict(depth=3, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2), **_qwen_token_ids(tok),
    )
    model = _finish(Qwen2VLForConditionalGeneration(config), tok, "<|im_end|>", seed)
    return model, _qwen_processor(Qwen2VLProcessor, tok, max_tokens)


def tiny_qwen2_5_vl(seed: int = 0, max_tokens: int = 96):
    """Qwen2.5-VL: as Qwen2-VL plus window attention (windows of 2×2 LLM tokens; blocks 1 and 3
    attend over the whole image, 0 and 2 within windows)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tok = build_tokenizer(QWEN_SPECIALS)
    config = Qwen2_5_VLConfig(
        text_config=_text_config(len(tok), **_qwen_text_extra(tok)),
        vision_config=dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           window_size=56, fullatt_block_indexes=[1, 3]),
        **_qwen_token_ids(tok),
    )
    model = _finish(Qwen2_5_VLForConditionalGeneration(config), tok, "<|im_end|>", seed)
    return model, _qwen_processor(Qwen2_5_VLProcessor, tok, max_tokens)


def qwen_prompt(question: str, images: int = 1, videos: int = 0) -> str:
    """A Qwen chat prompt with ``images`` image then ``videos`` video placeholders before ``question``."""
    vision = ("<|vision_start|><|image_pad|><|vision_end|>" * images
              + "<|vision_start|><|video_pad|><|vision_end|>" * videos)
    return f"<|im_start|>user\n{vision}{question}<|im_end|>\n<|im_start|>assistant\n"


def llava_prompt(question: str, images: int = 1, videos: int = 0) -> str:
    """A LLaVA / OneVision prompt with ``images`` ``<image>`` then ``videos`` ``<video>``
    placeholders before ``question``."""
    vision = "<image>" * images + "<video>" * videos
    return f"<|im_start|>user\n{vision}\n{question}<|im_end|>\n<|im_start|>assistant\n"


def _chat_template(image: str, video: str) -> str:
    """A ChatML Jinja template: a string content as it is; a list's images and videos as
    ``image`` / ``video`` placeholders in their order, texts as they are."""
    return (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}" + image
        + "{% elif c['type'] == 'video' %}" + video + "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


#: Chat templates for the tiny checkpoints (real checkpoints ship their own), by family.
QWEN_CHAT_TEMPLATE = _chat_template("<|vision_start|><|image_pad|><|vision_end|>",
                                    "<|vision_start|><|video_pad|><|vision_end|>")
LLAVA_CHAT_TEMPLATE = _chat_template("<image>\n", "<video>\n")

#: The stock processor and video processor class names of each tiny family.
_STOCK = {"LlavaOnevisionForConditionalGeneration": ("LlavaOnevisionProcessor", "LlavaOnevisionVideoProcessor"),
          "Qwen2VLForConditionalGeneration": ("Qwen2VLProcessor", "Qwen2VLVideoProcessor"),
          "Qwen2_5_VLForConditionalGeneration": ("Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor")}


def save_checkpoint(model, processor, out_dir: str, chat_template: str | None = None) -> str:
    """Write a tiny model and its processor as a checkpoint folder laid out as transformers
    saves the stock classes: weights, tokenizer and a ``processor_config.json`` naming the stock
    processor class with its settings and its image and video processors (so, with torchvision,
    ``AutoProcessor`` builds the stock video processor from it); ``chat_template`` (e.g.
    :data:`QWEN_CHAT_TEMPLATE`) is saved as ``chat_template.jinja``."""
    import json
    import os

    model.save_pretrained(out_dir)
    if chat_template is not None:
        with open(os.path.join(out_dir, "chat_template.jinja"), "w") as f:
            f.write(chat_template)
    processor.tokenizer.save_pretrained(out_dir)
    proc_class, video_class = _STOCK[type(model).__name__]
    config = {"processor_class": proc_class, "image_processor": processor.image_processor.to_dict()}
    if getattr(processor, "video_processor", None) is not None:
        video = {k: v for k, v in processor.video_processor.to_dict().items() if k != "video_processor_type"}
        config["video_processor"] = {"video_processor_type": video_class, **video}
    for name in ("num_image_tokens", "vision_feature_select_strategy", "vision_aspect_ratio"):
        if getattr(processor, name, None) is not None:
            config[name] = getattr(processor, name)
    with open(os.path.join(out_dir, "processor_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return out_dir
