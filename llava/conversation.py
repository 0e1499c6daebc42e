"""Conversation templates (the prompt formats LLaVA models were trained with), text for text
those of the original tree's ``llava/conversation.py``.

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
        if messages and isinstance(messages[0][1], tuple):
            # A demo-UI turn (text, image, mode): the image goes first, as in the original.
            role, (text, *_rest) = messages[0]
            text = text.replace("<image>", "").strip()
            if "mmtag" in self.version:
                messages[0] = [role, text]
                messages[:0] = [[self.roles[0], "<Image><image></Image>"], [self.roles[1], "Received."]]
            else:
                messages[0] = [role, "<image>\n" + text]
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


_HUMAN_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
_USER_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_MMTAG_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant is able to understand the visual content that the user provides, and assist the user "
    "with a variety of tasks using natural language."
    "The visual content will be provided with the following format: <Image>visual content</Image>."
)
_LLAMA_2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being "
    "safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal "
    "content. Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
    "something not correct. If you don't know the answer to a question, please don't share false information."
)
# The few-shot exchange the original v0 template carries (offset 2: not shown in a UI).
_V0_EXAMPLE = [
    ["Human", "What are the key differences between renewable and non-renewable energy sources?"],
    [
        "Assistant",
        "Renewable energy sources are those that can be replenished naturally in a relatively "
        "short amount of time, such as solar, wind, hydro, geothermal, and biomass. "
        "Non-renewable energy sources, on the other hand, are finite and will eventually be "
        "depleted, such as coal, oil, and natural gas. Here are some key differences between "
        "renewable and non-renewable energy sources:\n"
        "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable "
        "energy sources are finite and will eventually run out.\n"
        "2. Environmental impact: Renewable energy sources have a much lower environmental impact "
        "than non-renewable sources, which can lead to air and water pollution, greenhouse gas emissions, "
        "and other negative effects.\n"
        "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically "
        "have lower operational costs than non-renewable sources.\n"
        "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote "
        "locations than non-renewable sources.\n"
        "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different "
        "situations and needs, while non-renewable sources are more rigid and inflexible.\n"
        "6. Sustainability: Renewable energy sources are more sustainable over the long term, while "
        "non-renewable sources are not, and their depletion can lead to economic and social instability.\n",
    ],
]


def _two(system: str, version: str) -> Conversation:
    return Conversation(system=system, roles=("USER", "ASSISTANT"), version=version, messages=[], offset=0,
                        sep_style=SeparatorStyle.TWO, sep=" ", sep2="</s>")


def _llama_2(system: str, sep: str) -> Conversation:
    return Conversation(system=system, roles=("USER", "ASSISTANT"), version="llama_v2", messages=[], offset=0,
                        sep_style=SeparatorStyle.LLAMA_2, sep=sep, sep2="</s>")


def _mpt(system: str) -> Conversation:
    return Conversation(system=system, roles=("<|im_start|>user\n", "<|im_start|>assistant\n"), version="mpt",
                        messages=[], offset=0, sep_style=SeparatorStyle.MPT, sep="<|im_end|>")


def _single(system: str, messages: list, offset: int, version: str = "Unknown") -> Conversation:
    return Conversation(system=system, roles=("Human", "Assistant"), messages=messages, offset=offset,
                        sep_style=SeparatorStyle.SINGLE, sep="###", version=version)


conv_vicuna_v0 = _single(_HUMAN_SYSTEM, _V0_EXAMPLE, offset=2)
conv_vicuna_v1 = _two(_USER_SYSTEM, "v1")
conv_llama_2 = _llama_2(_LLAMA_2_SYSTEM, "<s>")
conv_llava_llama_2 = _llama_2(
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language.",
    "<s>",
)
conv_mpt = _mpt(
    "<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. "
    "The assistant gives helpful and honest answers."
)
conv_llava_plain = Conversation(system="", roles=("", ""), messages=[], offset=0, sep_style=SeparatorStyle.PLAIN,
                                sep="\n")
conv_llava_v0 = _single(_HUMAN_SYSTEM, [], offset=0)
conv_llava_v0_mmtag = _single(_MMTAG_SYSTEM, [], offset=0, version="v0_mmtag")
conv_llava_v1 = _two(_HUMAN_SYSTEM, "v1")
conv_llava_v1_mmtag = _two(_MMTAG_SYSTEM, "v1_mmtag")
conv_mistral_instruct = _llama_2("", "")
conv_chatml_direct = _mpt("<|im_start|>system\nAnswer the questions.")

default_conversation = conv_vicuna_v1
#: The original tree's table, name for name (note that "default" is the v0 template there).
conv_templates: dict[str, Conversation] = {
    "default": conv_vicuna_v0,
    "v0": conv_vicuna_v0,
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "llama_2": conv_llama_2,
    "mistral_instruct": conv_mistral_instruct,
    "chatml_direct": conv_chatml_direct,
    "mistral_direct": conv_chatml_direct,
    "plain": conv_llava_plain,
    "v0_plain": conv_llava_plain,
    "llava_v0": conv_llava_v0,
    "v0_mmtag": conv_llava_v0_mmtag,
    "llava_v1": conv_llava_v1,
    "v1_mmtag": conv_llava_v1_mmtag,
    "llava_llama_2": conv_llava_llama_2,
    "mpt": conv_mpt,
}


def default_conv_mode(model_name: str) -> str:
    """The template the original ``run_llava`` picks from a model name (first match wins)."""
    name = model_name.lower()
    for needle, mode in (("llama-2", "llava_llama_2"), ("mistral", "mistral_instruct"),
                         ("v1.6-34b", "chatml_direct"), ("v1", "llava_v1"), ("mpt", "mpt")):
        if needle in name:
            return mode
    return "llava_v0"


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
