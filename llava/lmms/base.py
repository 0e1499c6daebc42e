"""What every plug-in model shares: the compression model arguments, device placement, the
``generate_until`` loop (batches of requests with equal generation settings, stop strings cut
off afterwards, answers in request order), the checks on each request's visuals (images; video
files for the video models — lmms-eval passes a video as its path) and the visual-token
reports of :mod:`llava.lmms.records`. A model family only loads its model, reads a video
(:meth:`CompressingLMM.load_video`, video models) and answers a batch
(:meth:`CompressingLMM.answer`)."""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from llava.compression import COMPRESSORS, Compressor
from llava.compression.cli import compression_config
from llava.errors import PromptTooLongError
from llava.eval.generation import Answer

from .options import compressor_from_model_args, split_model_args
from .records import VisualTokenCounts, VisualTokenTally, sample_record
from .registry import VIDEO_MODELS, model_name
from .video import VideoClip

#: Generation settings the plug-in models understand (``until`` is applied to the text).
GEN_KEYS = ("until", "max_new_tokens", "temperature", "top_p", "num_beams", "do_sample")
DEFAULT_MAX_NEW_TOKENS = 1024  # lmms-eval's stock models' default

def stop_at(text: str, until: list[str]) -> str:
    """``text`` up to the first occurrence of any stop string (lmms-eval's ``until``)."""
    for term in until:
        if term:
            text = text.split(term)[0]
    return text


class CompressingLMM(lmms):
    """Base of the plug-in models. Subclasses call :meth:`setup` from ``__init__`` and
    implement :meth:`answer`."""

    is_simple = True
    #: model arguments of the subclass (for the "unknown argument" message).
    MODEL_ARGS: tuple[str, ...] = ()
    #: whether the model takes video files
    VIDEO: bool = False

    def setup(self, compression: str, options: dict[str, Any], *, device: str | None, batch_size) -> None:
        """Parse the compression arguments (``options`` holds everything not consumed by the
        subclass's own parameters), choose the device and the data-parallel rank."""
        from accelerate import Accelerator

        comp_args = split_model_args(dict(options), type(self).__name__, ("compression", *self.MODEL_ARGS))
        self.compressor: Compressor | None = compressor_from_model_args(compression, comp_args)
        self.compression = compression_config(self.compressor)
        try:
            self.batch_size_per_gpu = int(batch_size)
        except (TypeError, ValueError):
            self.batch_size_per_gpu = 0
        if self.batch_size_per_gpu < 1 or str(batch_size).strip() != str(self.batch_size_per_gpu):
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.accelerator = Accelerator()
        cuda = torch.cuda.is_available()
        if self.accelerator.num_processes > 1:
            self._device = torch.device(f"cuda:{self.accelerator.local_process_index}" if cuda else "cpu")
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes
        else:
            from llava.model.builder import check_device

            self._device = check_device(device) if device else torch.device("cuda" if cuda else "cpu")
        self._warned: set[str] = set()

    def resolve_dtype(self, dtype: str | None, pretrained: str) -> str:
        """The weights dtype by name, as the drivers' ``--dtype``: default float16 on CUDA and
        float32 elsewhere, ``auto`` = the checkpoint's ``torch_dtype``."""
        from llava.model.builder import DTYPES, run_dtype

        if dtype is not None and dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}; got {dtype!r}")
        return str(DTYPES.get(run_dtype(dtype, str(self.device), pretrained), dtype)).removeprefix("torch.")

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # ------------------------------------------------------------------ one family's part

    def answer(self, prompts: list[str], visuals: list[list], gen: dict[str, Any]) -> list[Answer]:
        """Answer a batch: ``visuals[b]`` is request b's list of PIL images and (video models)
        :class:`~llava.lmms.video.VideoClip` s, in the task's order (may be empty)."""
        raise NotImplementedError

    def load_video(self, path: str) -> VideoClip:
        """The frames of the video file ``path`` the model sees (video models)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ lmms-eval's API

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(f"{type(self).__name__} generates answers; loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} does not support multi-round generation")

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        tally = VisualTokenTally()
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        results: list[GenerationResult | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc="Model Responding")
        for idxs in groups.values():
            gen = self._generation_settings(requests[idxs[0]].args[1])
            for start in range(0, len(idxs), self.batch_size):
                batch = idxs[start:start + self.batch_size]
                args = [requests[i].args for i in batch]
                visuals = [self._visuals(a) for a in args]
                try:
                    answers = self.answer([a[0] for a in args], visuals, gen)
                except PromptTooLongError as e:
                    _, _, _, doc_id, task, _ = args[e.index]
                    raise ValueError(
                        f"task {task}, document {doc_id}: the prompt is {e.length} tokens long with its visual "
                        f"tokens, more than the model's context of {e.limit}; lmms-eval keeps no per-question "
                        f"error entries, so the run stops here (the scripts' drivers record such a question "
                        f"as an error entry and go on)"
                    ) from e
                for i, a, ans in zip(batch, args, answers):
                    record = sample_record(ans.images, self.compression, ans.videos)
                    tally.add(a[4], record, ans.output_tokens)
                    counts = VisualTokenCounts(input_tokens=ans.input_tokens, output_tokens=ans.output_tokens,
                                               visual=record)
                    results[i] = GenerationResult(stop_at(ans.text, gen["until"]), counts)
                bar.update(len(batch))
        bar.close()
        figures = tally.log()
        if figures and self.rank == 0:
            logger.info(f"visual tokens kept: {figures['visual_token_ratio']:.4f} of uncompressed "
                        f"({self.compression['name']})")
        return results

    # ------------------------------------------------------------------ helpers

    def _visuals(self, args: tuple) -> list:
        """The request's visuals (``doc_to_visual`` of its document, ``None`` entries dropped):
        PIL images as they are, video files (paths) read by :meth:`load_video`."""
        from PIL import Image

        _context, _gen, doc_to_visual, doc_id, task, split = args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        name = model_name(type(self))
        out = []
        for v in (v for v in visuals if v is not None):
            if isinstance(v, Image.Image):
                out.append(v)
            elif isinstance(v, (str, os.PathLike)):
                out.append(self._video(os.fspath(v), task, doc_id, name))
            else:
                takes = "images and video files" if self.VIDEO else "images"
                raise TypeError(f"{name} takes {takes}; task {task}, document {doc_id} gave a {type(v).__name__} "
                                f"({str(v)[:80]!r})")
        return out

    def _video(self, path: str, task: str, doc_id: int, name: str) -> VideoClip:
        """A video of the request, refused where it cannot be compressed as asked."""
        where = f"task {task}, document {doc_id}"
        if not self.VIDEO:
            raise TypeError(f"{name} takes images; {where} gave a video ({path!r}) — videos go to "
                            f"{', '.join(VIDEO_MODELS)}")
        if self.compressor is not None and not self.compressor.handles_video():
            raise NotImplementedError(
                f"{self.compressor.name} does not compress videos ({where} gave {path!r}); methods for videos: "
                f"{', '.join(n for n, c in COMPRESSORS.items() if c.handles_video())}")
        try:
            return self.load_video(path)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{where}: {e}") from None
        except (OSError, ValueError) as e:  # unreadable, too short, ...
            raise ValueError(f"{where}: {e}") from None

    def _generation_settings(self, raw: dict[str, Any]) -> dict[str, Any]:
        gen = dict(raw or {})
        ignored = sorted(set(gen) - set(GEN_KEYS))
        for key in ignored:
            if key not in self._warned:
                self._warned.add(key)
                logger.warning(f"{type(self).__name__}: generation setting {key!r} is ignored")
        until = gen.get("until") or []
        if isinstance(until, str):
            until = [until]
        if not isinstance(until, list):
            raise ValueError(f"until must be a string or a list of strings, got {type(until).__name__}")
        temperature = float(gen.get("temperature") or 0.0)
        return {
            "until": until,
            "max_new_tokens": int(gen.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS),
            "temperature": temperature,
            "top_p": gen.get("top_p") if temperature > 0 else None,
            "num_beams": int(gen.get("num_beams") or 1),
        }
