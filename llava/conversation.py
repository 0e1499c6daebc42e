"""Conversation templates (the prompt formats LLaVA models were trained with).

``conv_templates[name].copy()`` gives a fresh conversation; ``append_message(role, text)``
adds turns (``None`` text for the turn the model should complete) and ``get_prompt()``
renders the exact string the model expects.
"""

from __future__ import annotations

import dataclasses
from enum import Enum, auto


class SeparatorStyle(Enum):
    SINGLE = auto()
    TWO = auto()
    MPT = auto()
    PLAIN = auto()
    LLAMA_2 = auto()


@dataclasses.dataclass
class Conversation:
    """A multi-turn prompt in one of the :class:`SeparatorStyle` formats."""

    system: str
    roles: tuple[str, str]
    messages: list[list]
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    version: str = "Unknown"
    skip_next: bool = False

    def get_prompt(self) -> str:
        messages = [list(m) for m in self.messages]
        style = self.sep_style
        if style is SeparatorStyle.SINGLE:
            out = self.system + self.sep
            for role, msg in messages:
                out += f"{role}: {self._text(msg)}{self.sep}" if msg else f"{role}:"
            return out
        if style is SeparatorStyle.TWO:
            seps = (self.sep, self.sep2)
            out = self.system + seps[0]
            for i, (role, msg) in enumerate(messages):
                out += f"{role}: {self._text(msg)}{seps[i % 2]}" if msg else f"{role}:"
            return out
        if style is SeparatorStyle.MPT:
            out = self.system + self.sep
            for role, msg in messages:
                out += f"{role}{self._text(msg)}{self.sep}" if msg else role
            return out
        if style is SeparatorStyle.LLAMA_2:
            out = ""
            for i, (_role, msg) in enumerate(messages):
                if i == 0 and not msg:
                    raise ValueError("the first message of a LLAMA_2 conversation must not be empty")
                if not msg:
                    continue
                text = self._text(msg)
                if i == 0 and self.system:
                    text = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n{text}"
                if i % 2 == 0:
                    out += f"{self.sep}[INST] {text} [/INST]"
                else:
                    out += f" {text} {self.sep2}"
            return out.lstrip(self.sep)
        if style is SeparatorStyle.PLAIN:
            seps = (self.sep, self.sep2 or "")
            out = self.system
            for i, (_role, msg) in enumerate(messages):
                out += f"{self._text(msg)}{seps[i % 2]}" if msg else ""
            return out
        raise ValueError(f"invalid separator style: {style}")

    @staticmethod
    def _text(msg) -> str:
        # Tuples (text, image, mode) come from the demo UIs; only the text enters the prompt.
        return msg[0] if isinstance(msg, tuple) else msg

    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append([role, message])

    def copy(self) -> Conversation:
        return Conversation(
            system=self.system,
            roles=self.roles,
            messages=[[r, m] for r, m in self.messages],
            offset=self.offset,
            sep_style=self.sep_style,
            sep=self.sep,
            sep2=self.sep2,
            version=self.version,
        )


_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

conv_vicuna_v1 = Conversation(
    system=_VICUNA_SYSTEM,
    roles=("USER", "ASSISTANT"),
    version="v1",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)

conv_llava_v1 = conv_vicuna_v1.copy()

conv_mistral_instruct = Conversation(
    system="",
    roles=("USER", "ASSISTANT"),
    version="llama_v2",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.LLAMA_2,
    sep="",
    sep2="</s>",
)

conv_chatml_direct = Conversation(
    system="<|im_start|>system\nAnswer the questions.",
    roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
    version="mpt",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.MPT,
    sep="<|im_end|>",
)

conv_llava_plain = Conversation(
    system="",
    roles=("", ""),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.PLAIN,
    sep="\n",
)

default_conversation = conv_vicuna_v1
conv_templates: dict[str, Conversation] = {
    "default": conv_vicuna_v1,
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "llava_v1": conv_llava_v1,
    "mistral_instruct": conv_mistral_instruct,
    "chatml_direct": conv_chatml_direct,
    "mistral_direct": conv_chatml_direct,
    "plain": conv_llava_plain,
}


def build_chat_prompt(query: str, model_config, conv_mode: str, has_image: bool = True) -> str:
    """One user turn in template ``conv_mode``, ready for the model to answer.

    With ``has_image``, the image placeholder goes where the query says
    (``<image-placeholder>``), or stays where the query already has ``<image>``, or is put
    in front on its own line — wrapped in start/end tokens if the model was trained so.
    """
    from llava.constants import (
        DEFAULT_IM_END_TOKEN,
        DEFAULT_IM_START_TOKEN,
        DEFAULT_IMAGE_TOKEN,
        IMAGE_PLACEHOLDER,
    )

    if has_image:
        image_token = DEFAULT_IMAGE_TOKEN
        if getattr(model_config, "mm_use_im_start_end", False):
            image_token = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN
        if IMAGE_PLACEHOLDER in query:
            query = query.replace(IMAGE_PLACEHOLDER, image_token)
        elif DEFAULT_IMAGE_TOKEN not in query:
            query = image_token + "\n" + query
    conv = get_conv_template(conv_mode)
    conv.append_message(conv.roles[0], query)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def get_conv_template(name: str) -> Conversation:
    """A fresh copy of template ``name``; unknown names raise with the valid ones."""
    if name not in conv_templates:
        raise KeyError(f"unknown conversation mode {name!r}; valid: {', '.join(sorted(conv_templates))}")
    return conv_templates[name].copy()
