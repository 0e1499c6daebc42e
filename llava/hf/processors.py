"""Loading a checkpoint's processor for images when transformers cannot build its video
processor (transformers' video processors need torchvision, which a CPU-only torch may lack)."""

from __future__ import annotations

import functools
import json
import os
from typing import Any

#: ``processor_config.json`` entries that are not the processor's own settings.
_NOT_SETTINGS = ("processor_class", "image_processor", "video_processor", "auto_map")


@functools.cache
def image_only(processor_class: type) -> type:
    """``processor_class`` without its video processor: transformers checks every sub-processor
    of a processor's ``__init__`` — and its video processors need torchvision."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        processor_class.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return type(f"ImageOnly{processor_class.__name__}", (processor_class,), {"__init__": __init__})


def load_processor(path: str, processor_class: str) -> Any:
    """The processor of the checkpoint folder ``path`` (``processor_class``, e.g.
    ``"Qwen2VLProcessor"``). When its video processor cannot be built, the processor is
    assembled from the image processor, the tokenizer, the settings of
    ``processor_config.json`` and the chat template, without one: enough for images."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    cls = getattr(transformers, processor_class)
    try:
        return cls.from_pretrained(path)
    except (ImportError, OSError, ValueError) as e:
        if "video" not in str(e).lower() and "torchvision" not in str(e).lower():
            raise
    settings: dict[str, Any] = {}
    config_file = os.path.join(path, "processor_config.json")
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as fh:
            settings = {k: v for k, v in json.load(fh).items() if k not in _NOT_SETTINGS}
    template_file = os.path.join(path, "chat_template.jinja")
    if os.path.isfile(template_file):
        with open(template_file, encoding="utf-8") as fh:
            settings["chat_template"] = fh.read()
    return image_only(cls)(image_processor=AutoImageProcessor.from_pretrained(path),
                           tokenizer=AutoTokenizer.from_pretrained(path), **settings)
