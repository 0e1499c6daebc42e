"""The generation loop: model set-up, batched left-padded generation, and answer / error records.

A question that cannot be answered — a missing, unreadable or decompression-bomb image, a
malformed question, a prompt longer than the model's context, a generation error — becomes an
error entry and the run goes on. Several generation failures in a row mean a broken set-up,
not bad questions: the run stops (:class:`~llava.eval.runs.errors.RunFailed`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import shortuuid

from llava.errors import PromptTooLongError

from .errors import RunError, RunFailed
from .questions import Item


def load_generator(args: argparse.Namespace, model_name: str, compressor, device: str, dtype: str) -> Generator:
    """Load the run's model; what the loader refuses (a score layer the tower lacks, a bad
    ``torch_dtype``, ...) becomes a :class:`RunError` with the loader's one-line message."""
    import torch

    from llava.model.builder import load_pretrained_model

    try:
        tokenizer, model, image_processor, _ = load_pretrained_model(
            args.model_path, args.model_base, model_name, device=device, compressor=compressor,
            attn_implementation=args.attn_implementation, dtype=getattr(torch, dtype))
    except (ValueError, FileNotFoundError, NotImplementedError) as e:
        raise RunError(str(e)) from None
    return Generator(args, model_name, tokenizer, model, image_processor)


class Generator:
    """Model, tokenizer and prompt building for one run; ``answer(items)`` → answer records.
    ``args`` supplies the generation flags (``conv_mode``, ``temperature``, ``top_p``,
    ``num_beams``, ``max_new_tokens``) and ``image_folder``."""

    MAX_CONSECUTIVE_FAILURES = 3

    def __init__(self, args: argparse.Namespace, model_name: str, tokenizer, model, image_processor):
        from llava.compression.cli import compression_config

        self.args, self.model_name = args, model_name
        self.tokenizer, self.model, self.image_processor = tokenizer, model, image_processor
        self.compression = compression_config(model.compressor)
        self._failures = 0

    def load_image(self, item: Item):
        from llava.mm_utils import ImageLoadError, load_image, load_image_from_base64

        where = f"question {item.question_id}" if item.image_b64 else os.path.join(self.args.image_folder, item.image)
        try:
            if item.image_b64:
                return load_image_from_base64(item.image)
            return load_image(where)
        except ImageLoadError as e:
            if item.image_b64:
                raise ImageLoadError(f"{where}: {e}") from e
            raise

    def answer(self, items: list[Item]) -> list[dict]:
        """Records for ``items`` in order: errors for items that fail, answers for the rest."""
        from llava.mm_utils import ImageLoadError

        out: dict[int, dict] = {}
        ready: list[tuple[int, Any]] = []
        for i, it in enumerate(items):
            if it.error is not None:
                out[i] = self.error_record(it, it.error)
                continue
            image = None
            if it.image is not None:
                try:
                    image = self.load_image(it)
                except (ImageLoadError, OSError, ValueError) as e:
                    out[i] = self.error_record(it, str(e))
                    continue
            ready.append((i, image))
        if ready:
            try:
                results = self._generate([items[i] for i, _ in ready], [im for _, im in ready])
                self._failures = 0
            except Exception as e:  # one bad question must not stop a 10k-question run ...
                if _is_fatal(e):
                    raise
                if len(ready) > 1:  # ... so find it: answer the batch one by one
                    results = [self._generate_one(items[i], im) for i, im in ready]
                else:
                    results = [self._failed(e)]
            for (i, _), res in zip(ready, results):
                if isinstance(res, Exception):
                    out[i] = self.error_record(items[i], _reason(res))
                else:
                    out[i] = self.answer_record(items[i], *res)
        return [out[i] for i in range(len(items))]

    def _generate_one(self, item: Item, image):
        try:
            res = self._generate([item], [image])[0]
            self._failures = 0
            return res
        except Exception as e:
            if _is_fatal(e):
                raise
            return self._failed(e)

    def _failed(self, e: Exception) -> Exception:
        """Count a failed question; several in a row mean a broken set-up, not a bad question.
        An overlong prompt is the question's own fault and is not counted."""
        if isinstance(e, PromptTooLongError):
            return e
        self._failures += 1
        if self._failures >= self.MAX_CONSECUTIVE_FAILURES:
            raise RunFailed(f"{self._failures} questions in a row failed to generate, the set-up is broken; "
                            f"last error: {type(e).__name__}: {e}") from e
        return e

    def _generate(self, items: list[Item], images: list) -> list[tuple[str, dict | None]]:
        """Generate for ``items``; ``images[b]`` is item b's PIL image or None (text only)."""
        from llava.eval.generation import generate_answers

        a = self.args
        answers = generate_answers(
            self.model, self.tokenizer, self.image_processor, [it.message for it in items],
            [[im] if im is not None else [] for im in images], conv_mode=a.conv_mode,
            max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p, num_beams=a.num_beams)
        return [(ans.text, ans.images[0] if ans.images else None) for ans in answers]

    def answer_record(self, item: Item, text: str, info: dict | None) -> dict:
        meta = _meta(item)
        if info is None:
            meta.update(visual_tokens=0, visual_tokens_uncompressed=0)
        else:
            meta.update(visual_tokens=info["tokens"], visual_tokens_uncompressed=info["tokens_uncompressed"],
                        grid=info["grid"], thumbnail_kept=info["thumbnail_kept"], crop_kept=info["crop_kept"])
            if "budgets" in info:
                meta["budgets"] = info["budgets"]
        meta["compression"] = self.compression
        return {**_base(item), "prompt": item.prompt, "text": text, "answer_id": shortuuid.uuid(),
                "model_id": self.model_name, "metadata": meta}

    def error_record(self, item: Item, reason: str) -> dict:
        return error_record(item, reason, self.model_name)


def _base(item: Item) -> dict:
    rec = {"question_id": item.question_id}
    if item.fields or item.round_id:
        rec["round_id"] = item.round_id
    rec.update(item.fields)
    return rec


def _meta(item: Item) -> dict:
    meta: dict[str, Any] = {}
    if item.occurrence:
        meta["occurrence"] = item.occurrence
    if item.question_id is None and item.line is not None:
        meta["line"] = item.line
    return meta


def error_record(item: Item, reason: str, model_name: str) -> dict:
    """The answer-file entry of a question that could not be answered."""
    meta = _meta(item)
    meta["error"] = reason
    return {**_base(item), "prompt": item.prompt, "text": "", "error": reason, "answer_id": shortuuid.uuid(),
            "model_id": model_name, "metadata": meta}


def _reason(e: Exception) -> str:
    if isinstance(e, PromptTooLongError):
        return (f"prompt too long: {e.length} tokens with its visual tokens, more than the model's context "
                f"of {e.limit}; the question was not asked")
    return f"generation failed: {type(e).__name__}: {e}"


def _is_fatal(e: BaseException) -> bool:
    import torch

    return isinstance(e, (MemoryError, torch.OutOfMemoryError, SystemExit, RunError))


__all__ = ["Generator", "error_record", "load_generator"]
