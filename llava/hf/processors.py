"""A checkpoint's processor, also where transformers cannot build its video processor.

transformers' video processors need torchvision, which a CPU-only torch may lack; every
processor checks its sub-processors in ``__init__``, so without torchvision even an image-only
OneVision or Qwen processor fails to build. :func:`load_processor` then assembles the same
processor class from the folder's image processor, tokenizer, chat template and settings, and
puts :class:`llava.hf.video.VideoProcessor` in place of the video processor.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any

from llava.utils import read_json

# model_type → processor class, for folders whose processor config does not name it.
_PROCESSOR_CLASSES = {"llava_next": "LlavaNextProcessor", "llava_onevision": "LlavaOnevisionProcessor",
                      "qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}
# Families whose processor takes ``videos=``.
_VIDEO_CLASSES = ("LlavaOnevisionProcessor", "Qwen2VLProcessor", "Qwen2_5_VLProcessor")


@functools.cache
def image_only(processor_class: type) -> type:
    """``processor_class`` without its video processor. The subclass loads with
    ``from_pretrained`` like the stock class (image processor, tokenizer, settings)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        processor_class.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return type(f"ImageOnly{processor_class.__name__}", (processor_class,), {"__init__": __init__})


def _processor_class_name(path: str) -> tuple[str | None, dict]:
    """The processor class a folder names (processor / preprocessor config, else by model
    type) and the settings of the file that named it."""
    for file in ("processor_config.json", "preprocessor_config.json"):
        if os.path.isfile(os.path.join(path, file)):
            settings = read_json(os.path.join(path, file))
            if settings.get("processor_class"):
                return settings["processor_class"], settings
    if os.path.isfile(os.path.join(path, "config.json")):
        return _PROCESSOR_CLASSES.get(read_json(os.path.join(path, "config.json")).get("model_type")), {}
    return None, {}


def load_processor(model_path: str | os.PathLike, processor_class: str | None = None) -> Any:
    """The processor of the local checkpoint folder ``model_path``: transformers' own
    (``processor_class``, e.g. ``"Qwen2VLProcessor"``, or whatever ``AutoProcessor`` finds);
    without torchvision the same class built without its video processor. Processors of video
    families are returned able to take ``videos=`` (:func:`llava.hf.video.with_video_processor`)
    when the folder holds video-processor settings."""
    import transformers

    from llava.hf.video import with_video_processor

    path = os.fspath(model_path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model folder {path!r} not found")
    loader = getattr(transformers, processor_class) if processor_class else transformers.AutoProcessor
    try:
        processor = loader.from_pretrained(path)
    except (ImportError, OSError, ValueError) as e:
        # no torchvision for the video processor, or a folder saved without a video processor
        if "orchvision" not in str(e) and "video processor" not in str(e).lower():
            raise
        name, settings = _processor_class_name(path)
        name = processor_class or name
        if name is None or not hasattr(transformers, name):
            raise ValueError(f"{path!r}: cannot tell its processor class (processor_class {name!r})") from e
        stock = getattr(transformers, name)
        # image processor, tokenizer and chat template as transformers loads them; the processor's
        # own settings (e.g. OneVision's num_image_tokens) from its config, by the stock signature
        loaded = image_only(stock).from_pretrained(path)
        own = set(inspect.signature(stock.__init__).parameters) - {
            "self", "image_processor", "tokenizer", "video_processor", "chat_template", "kwargs"}
        processor = image_only(stock)(loaded.image_processor, loaded.tokenizer, chat_template=loaded.chat_template,
                                      **{k: v for k, v in settings.items() if k in own})
    if not hasattr(processor, "image_processor"):
        raise ValueError(f"{path!r} holds no multimodal processor (got {type(processor).__name__})")
    if any(c in type(processor).__name__ for c in _VIDEO_CLASSES):
        try:
            processor = with_video_processor(processor, model_path=path)
        except FileNotFoundError:  # a folder saved without video settings: images only
            pass
    return processor
