"""One batched, left-padded ``generate`` call on our LLaVA tree, with what each answer cost.

Shared by the eval drivers (:class:`llava.eval.runs.generate.Generator`) and the lmms-eval
plug-in (:mod:`llava.lmms.llava_gc2`), so both ask the model the same way: the chat prompt of
:func:`llava.conversation.build_chat_prompt` (image placeholder first), the image(s) through
:func:`llava.mm_utils.process_images`, greedy unless ``temperature > 0``, and the per-image
compression records of this call (``image_records``). A spliced prompt longer than the
model's context raises :class:`llava.errors.PromptTooLongError` (from ``model.generate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    """One generated answer. ``images`` holds each image's compression summary
    (:meth:`llava.compression.CompressedImage.info`: ``tokens``, ``tokens_uncompressed``,
    ``grid``, ...), in prompt order, and ``videos`` each video's (``frames``, ``frame_kept``,
    ...; the transformers video models of the lmms-eval plug-in); ``input_tokens`` is the LLM's
    prefill length (text + kept visual tokens) and ``output_tokens`` the generated tokens up to
    and including EOS."""

    text: str
    images: list[dict[str, Any]]
    input_tokens: int
    output_tokens: int
    videos: list[dict[str, Any]] = field(default_factory=list)


def user_message(text: str, n_images: int) -> str:
    """The user turn for ``n_images`` images: one placeholder is put in front by the chat
    template; several go in front here, one per image, unless the text places them itself."""
    from llava.constants import DEFAULT_IMAGE_TOKEN

    if n_images <= 1 or DEFAULT_IMAGE_TOKEN in text:
        return text
    return " ".join([DEFAULT_IMAGE_TOKEN] * n_images) + "\n" + text


def generate_answers(
    model,
    tokenizer,
    image_processor,
    messages: list[str],
    images: list[list],
    *,
    conv_mode: str,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float | None = None,
    num_beams: int = 1,
    pad_id: int | None = None,
    **model_kwargs: Any,
) -> list[Answer]:
    """Answer the user message ``messages[b]`` about the PIL images ``images[b]`` (``[]`` = text
    only). ``model_kwargs`` go to ``model.generate`` (e.g. ``compressor=`` for this call)."""
    import torch

    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.conversation import build_chat_prompt
    from llava.mm_utils import process_images, tokenizer_image_token
    from llava.utils import input_device

    if len(messages) != len(images):
        raise ValueError(f"{len(messages)} messages but {len(images)} image lists")
    if pad_id is None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.unk_token_id or 0)
    ids = [tokenizer_image_token(build_chat_prompt(user_message(p, len(ims)), model.config, conv_mode, bool(ims)),
                                 tokenizer, return_tensors="pt") for p, ims in zip(messages, images)]
    width = max(x.shape[0] for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)  # [B, L]
    mask = torch.zeros((len(ids), width), dtype=torch.long)  # [B, L]
    for b, x in enumerate(ids):  # left padding: every prompt ends where generation starts
        input_ids[b, width - x.shape[0]:] = x
        mask[b, width - x.shape[0]:] = 1
    kwargs: dict[str, Any] = dict(model_kwargs)
    device = input_device(model)
    records: list = []
    flat = [im for ims in images for im in ims]
    if flat:
        pix = process_images(flat, image_processor, model.config, device=device, dtype=model.dtype)
        kwargs.update(images=pix, image_sizes=[im.size for im in flat], image_records=records)
    sampling = temperature > 0
    with torch.inference_mode():
        out = model.generate(  # [B, new] (only the new tokens: the model is fed embeddings)
            input_ids.to(device), attention_mask=mask.to(device), do_sample=sampling,
            temperature=temperature if sampling else None, top_p=top_p if sampling else None,
            num_beams=num_beams, max_new_tokens=max_new_tokens, pad_token_id=pad_id, use_cache=True, **kwargs)
    texts = [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
    per_image = iter(records)
    infos = [[next(per_image).info() for _ in ims] for ims in images]
    n_out = output_lengths(out, model.generation_config.eos_token_id)
    n_text = [int(x.shape[0]) - int((x == IMAGE_TOKEN_INDEX).sum()) for x in ids]
    return [Answer(t, inf, nt + sum(i["tokens"] for i in inf), no)
            for t, inf, nt, no in zip(texts, infos, n_text, n_out)]


def output_lengths(out, eos_token_id) -> list[int]:
    """Generated tokens per row of ``out`` ``[B, new]`` up to and including the first EOS (the
    rest is padding); ``eos_token_id`` an id or a list of ids."""
    import torch

    if eos_token_id is None or out.shape[1] == 0:
        return [int(out.shape[1])] * out.shape[0]
    eos = torch.as_tensor(eos_token_id, device=out.device).reshape(-1)
    is_eos = torch.isin(out, eos)  # [B, new]
    first = is_eos.int().argmax(dim=1) + 1  # [B]
    return torch.where(is_eos.any(dim=1), first, torch.full_like(first, out.shape[1])).tolist()
